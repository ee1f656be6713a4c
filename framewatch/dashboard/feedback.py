"""``framewatch feedback export``: moderators' decisions as the training package's data set.

Each decided item (an alert or a near miss) whose reviewers' latest labels agree on ``violent``
or ``not-violent`` becomes rows of an imagefolder data set — one per evidence frame — with the
stream's metadata as the text: the image–text pairs the guidance network trains on
(``framewatch train --data OUT``, no conversion). ``unsure`` and disagreeing items are left out
and counted. Streams are split by a hash of their id — ``test`` (``--test-fraction``) is held
back, whole streams at a time — so ``framewatch report --on OUT`` can compare the model retrained
with feedback against the one it replaces on frames neither trained on.

Exported evidence is released (back under retention) unless ``--keep-held``; disagreeing items
stay held until they are resolved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framewatch.dashboard.review import FB_ENTRY, Review
from framewatch.errors import FrameWatchError
from framewatch.worker import contracts as c
from framewatch.worker.evidence import valid_id

DATASET_LABELS = ["non-violent", "violent"]
TO_DATASET = {c.LABEL_VIOLENT: "violent", c.LABEL_NOT_VIOLENT: "non-violent"}


class ExportError(FrameWatchError, ValueError):
    pass


def parse_since(text: str | None) -> str:
    """A feedback entry id (``1764300000000-0``), epoch ms, or an ISO date/time → XRANGE start."""
    if not text:
        return "-"
    ms, dash, seq = text.partition("-")
    if dash and ms.isdigit() and seq.isdigit() and len(ms) >= 10:  # an entry id: epoch ms, then a sequence number
        return text
    if text.isdigit():
        return f"{int(text)}-0"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"--since {text!r}: give an ISO time (2026-11-28T10:00), epoch ms, or a feedback entry id") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{int(moment.timestamp() * 1000)}-0"


def split_of(stream: str, test_fraction: float) -> str:
    bucket = int(hashlib.sha256(stream.encode()).hexdigest()[:8], 16) / 2**32
    return "test" if bucket < test_fraction else "train"


@dataclass
class Decided:
    item: str
    kind: str
    entry: str
    stream: str
    evidence: list[str]
    labels: dict[str, str] = field(default_factory=dict)  # reviewer -> latest label
    at_ms: int = 0
    last_feedback: str = ""


def consolidate(entries: list[tuple[str, dict[str, str]]]) -> dict[str, Decided]:
    """The latest label of each reviewer per item (a changed decision replaces the earlier one)."""
    items: dict[str, Decided] = {}
    for entry_id, f in entries:
        key = f.get(c.FB_ITEM, "")
        label = f.get(c.FB_LABEL, "")
        if not key or label not in c.FEEDBACK_LABELS:
            continue
        decided = items.setdefault(key, Decided(key, f.get(c.FB_KIND, ""), f.get(FB_ENTRY, ""), f.get(c.FB_STREAM, ""),
                                                [e for e in f.get(c.FB_EVIDENCE, "").split(",") if valid_id(e)]))
        decided.labels[f.get(c.FB_REVIEWER, "")] = label
        decided.last_feedback = entry_id
        with contextlib.suppress(ValueError):
            decided.at_ms = int(f.get(c.FB_AT_MS, "0"))
    return items


def export_feedback(review: Review, out: Path, since: str | None = None, test_fraction: float = 0.2, keep_held: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    if review.store is None:
        raise ExportError("evidence.backend is none: there are no images to export")
    if not 0 <= test_fraction < 1:
        raise ExportError(f"--test-fraction {test_fraction}: must be in [0, 1)")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty: export into a new folder (each export is a data set of its own)")
    entries = review.feedback(parse_since(since))
    decided = consolidate(entries)
    counts: dict[str, int] = {"items": len(decided), "exported_items": 0, "rows": 0, "unsure": 0, "conflict": 0, "missing_evidence": 0}
    by_label = {name: 0 for name in DATASET_LABELS}
    by_split = {"train": 0, "test": 0}
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    released: list[str] = []
    for number, d in enumerate(decided.values(), 1):
        if progress is not None:
            progress(number, len(decided))
        labels = set(d.labels.values())
        if labels == {c.LABEL_UNSURE}:
            counts["unsure"] += 1
            released += d.evidence
            continue
        labels.discard(c.LABEL_UNSURE)
        if len(labels) != 1:
            counts["conflict"] += 1
            continue
        label = TO_DATASET[labels.pop()]
        split = split_of(d.stream, test_fraction)
        wrote = 0
        for evidence in d.evidence:
            found = review.store.get(evidence)
            if found is None:
                counts["missing_evidence"] += 1
                continue
            record, image = found
            folder = out / split
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{evidence}.jpg"
            (folder / name).write_bytes(image)
            rows[split].append({
                "file_name": name, "text": record.text, "label": label, "group": d.stream,
                "score": record.score, "ema": record.ema, "threshold": record.threshold, "model": record.model, "stream": d.stream,
                "broadcast": record.broadcast, "pts_ms": record.pts_ms, "time": datetime.fromtimestamp(record.at_ms / 1000, UTC).isoformat(),
                "reviewers": sorted(r for r, v in d.labels.items() if v != c.LABEL_UNSURE), "item": d.item, "kind": d.kind,
                "evidence_kind": record.kind, "metadata": record.metadata,
            })
            wrote += 1
        if wrote:
            counts["exported_items"] += 1
            counts["rows"] += wrote
            by_label[label] += wrote
            by_split[split] += wrote
            released += d.evidence
    out.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        if split_rows:
            (out / split / "metadata.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows))
    (out / "dataset.json").write_text(json.dumps({"labels": DATASET_LABELS, "positive": "violent"}, indent=2) + "\n")
    summary = {**counts, "by_label": by_label, "by_split": by_split, "since": since or "", "through": entries[-1][0] if entries else "", "test_fraction": test_fraction,
               "exported_at": datetime.now(UTC).isoformat(timespec="seconds"), "released": 0 if keep_held else len(released)}
    (out / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not keep_held and released:
        review.store.release(released)
    if entries:
        review.client.set(review.keys.last_export, json.dumps({"through": entries[-1][0], "at_ms": int(time.time() * 1000)}))
    return summary
