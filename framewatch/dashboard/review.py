"""The review model over Redis and the evidence store: the live ranking, the queue of alerts and
near misses, decisions, and the feedback they become. Shared by the dashboard and
``framewatch feedback export``; reads and writes only the keys of docs/contracts.md.

Decisions: ``framewatch:feedback`` (a Redis stream) is the record — one entry per decision, a
changed decision is a new entry naming the label it replaces. ``framewatch:decisions`` (a hash,
item → JSON) holds each item's current label per reviewer and its change history, for the pages.
The entry is written first: a dashboard that dies between the two leaves the record complete.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from framewatch.logs import get_logger
from framewatch.worker import contracts as c
from framewatch.worker.evidence import EvidenceRecord, EvidenceStore, valid_id
from framewatch.worker.redis_io import Scores

log = get_logger("review")

KIND_ALERT = "alert"
KIND_NEAR_MISS = "near-miss"
KINDS = (KIND_ALERT, KIND_NEAR_MISS)
ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)  # fullmatch: "$" would let "1-1\n" through
FB_ENTRY = "entry"  # the alert's (or near miss's) entry id in its Redis stream
MAX_HISTORY = 50

# KEYS[1] decisions hash; ARGV: item, reviewer, label, at_ms, note. Keeps {current, history}.
_DECIDE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local data = raw and cjson.decode(raw) or {current = {}, history = {}}
if type(data.current) ~= 'table' then data.current = {} end
if type(data.history) ~= 'table' then data.history = {} end
data.current[ARGV[2]] = ARGV[3]
table.insert(data.history, {tonumber(ARGV[4]), ARGV[2], ARGV[3], ARGV[5]})
while #data.history > MAX_HISTORY do table.remove(data.history, 1) end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(data))
return 1
""".replace("MAX_HISTORY", str(MAX_HISTORY))


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


@dataclass
class Item:
    """An alert (a raise event) or a near miss, as the queue shows it."""

    kind: str
    entry: str
    event_id: str
    stream: str
    broadcast: str
    pts_ms: int
    at_ms: int
    ema: float | None
    score: float | None
    threshold: float | None
    model: str
    reason: str
    evidence: list[str]
    evidence_error: str = ""
    decisions: dict[str, str] = field(default_factory=dict)
    history: list[list[Any]] = field(default_factory=list)

    @classmethod
    def from_entry(cls, kind: str, entry: str, f: dict[str, str]) -> Item:
        def number(name: str) -> int:
            try:
                return int(f.get(name, "0"))
            except ValueError:
                return 0

        evidence = [e for e in f.get(c.A_EVIDENCE, "").split(",") if valid_id(e)]
        return cls(kind, entry, f.get(c.A_EVENT_ID, entry), f.get(c.A_STREAM, ""), f.get(c.A_BROADCAST, ""), number(c.A_PTS_MS),
                   number(c.A_AT_MS), _float(f.get(c.A_EMA)), _float(f.get(c.A_SCORE)), _float(f.get(c.A_THRESHOLD)),
                   f.get(c.A_MODEL, ""), f.get(c.A_REASON, "near miss" if kind == KIND_NEAR_MISS else ""), evidence,
                   f.get(c.A_EVIDENCE_ERROR, ""))

    @property
    def label(self) -> str:
        """The agreed label, "" while undecided, "conflict" when reviewers disagree. As the export
        reads it: "unsure" beside a decisive label abstains, so violent + unsure is violent."""
        labels = set(self.decisions.values())
        if len(labels) > 1:
            labels.discard(c.LABEL_UNSURE)
        return "" if not labels else labels.pop() if len(labels) == 1 else "conflict"

    def to_json(self, reviewer: str | None = None) -> dict[str, Any]:
        return {"kind": self.kind, "entry": self.entry, "stream": self.stream, "at_ms": self.at_ms, "pts_ms": self.pts_ms,
                "ema": self.ema, "score": self.score, "threshold": self.threshold, "evidence": self.evidence[:1],
                "label": self.label, "mine": self.decisions.get(reviewer or "", ""), "url": self.url}

    @property
    def url(self) -> str:
        return f"/review/{self.kind}/{self.entry}"


class Review:
    def __init__(self, client: Any, prefix: str = c.DEFAULT_PREFIX, store: EvidenceStore | None = None,
                 stale_after_s: float = 120.0) -> None:
        self.client = client
        self.keys = c.RedisKeys(prefix)
        self.store = store
        self.scores = Scores(client, prefix, stale_after_s)
        self._decide = client.register_script(_DECIDE)

    def _stream_key(self, kind: str) -> str:
        return self.keys.alerts if kind == KIND_ALERT else self.keys.nearmiss

    # --- reading ---------------------------------------------------------------------------

    def ranking(self, n: int = 20, spark: int = 30) -> list[dict[str, Any]]:
        rows = self.scores.top(n)
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            pipe.xrevrange(self.keys.history(row["stream"]), count=spark)
        for row, entries in zip(rows, pipe.execute() if rows else [], strict=True):
            row["spark"] = [round(float(_text(fields.get(b"score", b"0"))), 4) for _, fields in reversed(entries)]
        keep = ("stream", "score", "ema", "max_recent", "alert", "age_s", "frames", "spark", "model")
        return [{k: row.get(k) for k in keep} for row in rows]

    def _entries(self, kind: str, count: int) -> list[Item]:
        raw: Any = self.client.xrevrange(self._stream_key(kind), count=count)
        items = []
        for entry, fields in raw:
            f = {_text(k): _text(v) for k, v in fields.items()}
            if kind == KIND_ALERT and f.get(c.A_EVENT) != c.ALERT_RAISE:
                continue
            items.append(Item.from_entry(kind, _text(entry), f))
        return items

    def _with_decisions(self, items: list[Item]) -> list[Item]:
        if items:
            for item, raw in zip(items, self.client.hmget(self.keys.decisions, [i.event_id for i in items]), strict=True):
                if raw:
                    try:
                        data = json.loads(raw)
                        item.decisions = {str(k): str(v) for k, v in (data.get("current") or {}).items()}
                        item.history = list(data.get("history") or [])
                    except (ValueError, AttributeError):
                        pass
        return items

    def queue(self, reviewer: str, scope: str = "mine", limit: int = 50, scan: int = 2000) -> list[Item]:
        """Oldest first: items the reviewer has not decided (``mine``), undecided by anyone
        (``open``), or all (``all``); within the newest ``scan`` alerts and near misses."""
        seen: set[str] = set()
        items = []
        for item in self._entries(KIND_ALERT, scan) + self._entries(KIND_NEAR_MISS, scan):
            if item.event_id not in seen:  # an alert written twice (a retry on Redis Cluster) is one item
                seen.add(item.event_id)
                items.append(item)
        self._with_decisions(items)
        if scope == "mine":
            items = [i for i in items if reviewer not in i.decisions]
        elif scope == "open":
            items = [i for i in items if not i.decisions]
        items.sort(key=lambda i: (i.at_ms, i.entry))
        return items[:limit] if scope != "all" else items[-limit:][::-1]

    def item(self, kind: str, entry: str) -> Item | None:
        if kind not in KINDS or not ENTRY_ID.fullmatch(entry) or any(int(part) >= 2**64 for part in entry.split("-")):
            return None
        raw: Any = self.client.xrange(self._stream_key(kind), entry, entry)
        if not raw:
            return None
        f = {_text(k): _text(v) for k, v in raw[0][1].items()}
        if kind == KIND_ALERT and f.get(c.A_EVENT) != c.ALERT_RAISE:
            return None
        return self._with_decisions([Item.from_entry(kind, entry, f)])[0]

    def evidence(self, item: Item) -> list[EvidenceRecord]:
        if self.store is None:
            return []
        try:
            return [r for r in (self.store.record(e) for e in item.evidence) if r is not None]
        except Exception as exc:  # the evidence store is away: the page says so, the decision still works
            item.evidence_error = item.evidence_error or f"the evidence store did not answer ({exc.__class__.__name__})"
            return []

    def timeline(self, item: Item, before_s: float = 120.0, after_s: float = 60.0) -> list[dict[str, Any]]:
        """The stream's scored frames around the item (by when they were written), same broadcast."""
        start, end = max(0, item.at_ms - int(before_s * 1000)), item.at_ms + int(after_s * 1000)
        raw: Any = self.client.xrange(self.keys.history(item.stream), start, end, count=2000)
        rows = []
        for _, fields in raw:
            f = {_text(k): _text(v) for k, v in fields.items()}
            if f.get(c.H_BROADCAST, item.broadcast) != item.broadcast or f.get(c.H_LATE):
                continue
            score, ema = _float(f.get(c.H_SCORE)), _float(f.get(c.H_EMA))
            try:
                pts = int(f.get(c.H_PTS_MS, ""))
            except ValueError:
                continue
            if score is not None and ema is not None:
                rows.append({"pts_ms": pts, "score": score, "ema": ema})
        return rows

    # --- deciding --------------------------------------------------------------------------

    def decide(self, item: Item, reviewer: str, label: str, note: str = "", now_ms: int | None = None) -> str:
        """Record a decision; returns the feedback entry id. The item's evidence is held (kept past
        retention) until ``feedback export`` releases it."""
        if label not in c.FEEDBACK_LABELS:
            raise ValueError(f"label must be one of {c.FEEDBACK_LABELS}")
        note = note[: c.MAX_NOTE_CHARS]
        now_ms = now_ms or int(time.time() * 1000)
        entry = self.client.xadd(self.keys.feedback, {
            c.FB_ITEM: item.event_id, c.FB_KIND: item.kind, FB_ENTRY: item.entry, c.FB_LABEL: label, c.FB_REVIEWER: reviewer,
            c.FB_AT_MS: str(now_ms), c.FB_NOTE: note, c.FB_STREAM: item.stream, c.FB_EVIDENCE: ",".join(item.evidence),
            c.FB_PREVIOUS: item.decisions.get(reviewer, ""),
        })
        self._decide(keys=[self.keys.decisions], args=[item.event_id, reviewer, label, now_ms, note])
        # Held after the record: evidence is never held for a decision that was not written.
        if self.store is not None and item.evidence and label != c.LABEL_UNSURE:
            try:
                self.store.hold(item.evidence)
            except Exception as exc:  # the decision is recorded; its evidence keeps its TTL
                log.warning("evidence not held (the decision is recorded)", item=item.event_id, error=f"{exc.__class__.__name__}: {exc}")
        return _text(entry)

    def feedback(self, since: str = "-", count: int | None = None) -> list[tuple[str, dict[str, str]]]:
        """Feedback entries (oldest first) from the entry id ``since`` on."""
        out: list[tuple[str, dict[str, str]]] = []
        start = since
        while True:
            raw: Any = self.client.xrange(self.keys.feedback, start, "+", count=1000)
            for entry, fields in raw:
                out.append((_text(entry), {_text(k): _text(v) for k, v in fields.items()}))
            if len(raw) < 1000 or (count is not None and len(out) >= count):
                return out[:count] if count is not None else out
            start = "(" + _text(raw[-1][0])
