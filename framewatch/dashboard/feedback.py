"""``framewatch feedback export``: moderators' decisions as the training package's data set.

Each decided item (an alert or a near miss) whose reviewers' latest labels agree on ``violent``
or ``not-violent`` becomes rows of an imagefolder data set — one per evidence frame — with the
stream's metadata as the text: the image–text pairs the guidance network trains on
(``framewatch train --data OUT``, no conversion). ``unsure`` and disagreeing items are left out
and counted. Streams are split per label by a hash of their id into train, val and test
(``--test-fraction`` held back, whole streams at a time; three streams per label at least) — so ``framewatch report --on OUT`` can compare the model retrained
with feedback against the one it replaces on frames neither trained on.

Exported evidence is released (back under retention) unless ``--keep-held``; disagreeing items
stay held until they are resolved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
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
# Per label: one stream each for train, validation and test (frames of one stream never cross).
MIN_STREAMS_PER_LABEL = 3
TO_DATASET = {c.LABEL_VIOLENT: "violent", c.LABEL_NOT_VIOLENT: "non-violent"}


class ExportError(FrameWatchError, ValueError):
    pass


def parse_since(text: str | None) -> str:
    """A feedback entry id (``1764300000000-0``), epoch ms (13 digits) or seconds (10), a basic
    date (``20261128``), or an ISO date/time → XRANGE start. A time without a zone is UTC."""
    if not text:
        return "-"
    ms, dash, seq = text.partition("-")
    if dash and ms.isdigit() and seq.isdigit() and len(ms) >= 10:  # an entry id: epoch ms, then a sequence number
        return text
    if text.isdigit() and len(text) != 8:  # 8 digits are a basic ISO date, read below
        if len(text) >= 12:  # epoch ms (12 digits reach back to 2001)
            return f"{int(text)}-0"
        if len(text) >= 9:  # epoch seconds
            return f"{int(text) * 1000}-0"
        raise ExportError(f"--since {text!r}: {len(text)} digits are neither epoch seconds (10) nor ms (13) nor a date (20261128)")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"--since {text!r}: give an ISO time (2026-11-28T10:00, UTC unless it says +01:00), epoch seconds or ms, "
                          "or a feedback entry id") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{int(moment.timestamp() * 1000)}-0"


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


def assign_splits(streams: dict[str, str], test_fraction: float, val_fraction: float = 0.15) -> dict[str, str]:
    """Whole streams to ``train``, ``val`` or ``test``, per label (``streams``: stream → its label),
    by a fixed cut of a hash of their id: a hash below ``test_fraction`` is test, below
    ``test_fraction + val_fraction`` val, the rest train. The cut does not depend on which other
    streams are in the export, so a stream stays on its side in every later export with the same
    fractions, and ``report --on`` a newer export does not test a model on streams it trained on.
    (Ranking the export's streams by hash moved earlier test streams into train as streams were
    added: 29 of 200 simulated export pairs.) Then the minimums, moving the streams nearest the
    boundary: each label gets a test and a train stream, and a val stream when it has three — so
    training sees every label and small exports still give ``framewatch train`` its splits."""
    per_label = {label: sum(1 for v in streams.values() if v == label) for label in DATASET_LABELS}
    short = {label: n for label, n in per_label.items() if n < MIN_STREAMS_PER_LABEL}
    if short:
        said = ", ".join(f"{label}: {n} stream{'s' if n != 1 else ''}" for label, n in per_label.items())
        raise ExportError(f"the exportable decisions cover too few streams to train on ({said}): each label needs {MIN_STREAMS_PER_LABEL} "
                          "streams, for train, validation and a held-back test split of whole streams; decide on more alerts and "
                          "near misses, or export later (nothing was written or released)")

    def bucket(stream: str) -> float:
        return int(hashlib.sha256(stream.encode()).hexdigest()[:8], 16) / 2**32

    splits: dict[str, str] = {}
    for label in sorted(set(streams.values())):
        mine = sorted((s for s, lab in streams.items() if lab == label), key=bucket)
        chosen = {s: "test" if bucket(s) < test_fraction else "val" if bucket(s) < test_fraction + val_fraction else "train" for s in mine}

        def move(to: str, candidates: list[str], chosen: dict[str, str] = chosen) -> None:
            for stream in candidates:  # the first whose split keeps a stream without it
                if chosen[stream] != to and sum(v == chosen[stream] for v in chosen.values()) > 1:
                    chosen[stream] = to
                    return

        if "train" not in chosen.values():
            move("train", mine[::-1])
        if "test" not in chosen.values():
            move("test", mine)
        if "val" not in chosen.values():
            move("val", [s for s in mine if chosen[s] == "train"] + [s for s in mine[::-1] if chosen[s] == "test"])
        splits.update(chosen)
    return splits


def export_feedback(review: Review, out: Path, since: str | None = None, test_fraction: float = 0.2, keep_held: bool = False,
                    progress: Callable[[int, int], None] | None = None, val_fraction: float = 0.15) -> dict[str, Any]:
    if review.store is None:
        raise ExportError("evidence.backend is none: there are no images to export")
    if not 0 < test_fraction < 1:
        raise ExportError(f"--test-fraction {test_fraction}: must be between 0 and 1 (a held-back test split is what "
                          "`framewatch report --on` compares models on, and `framewatch train` needs one)")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty: export into a new folder (each export is a data set of its own)")
    start = parse_since(since)
    entries = review.feedback()  # the whole history: labels come from every decision, not only recent ones
    recent = {f.get(c.FB_ITEM, "") for entry_id, f in entries if start == "-" or _not_before(entry_id, start)}
    decided = {k: v for k, v in consolidate(entries).items() if k in recent}
    counts: dict[str, int] = {"items": len(decided), "exported_items": 0, "rows": 0, "unsure": 0, "conflict": 0, "missing_evidence": 0,
                              "shared_frame_conflicts": 0}
    frames: dict[str, tuple[str, Decided]] = {}  # evidence id -> (label, its first item)
    clashing: set[str] = set()
    keep: set[str] = set()  # evidence of items still held for a decision
    released: set[str] = set()
    for number, d in enumerate(decided.values(), 1):
        if progress is not None:
            progress(number, len(decided))
        labels = set(d.labels.values())
        if labels == {c.LABEL_UNSURE}:
            counts["unsure"] += 1
            released.update(d.evidence)
            continue
        labels.discard(c.LABEL_UNSURE)
        if len(labels) != 1:
            counts["conflict"] += 1
            keep.update(d.evidence)
            continue
        label = TO_DATASET[labels.pop()]
        for evidence in d.evidence:
            if evidence in frames and frames[evidence][0] != label:
                clashing.add(evidence)  # one frame, two items, two labels: neither is trusted
            frames.setdefault(evidence, (label, d))
    for evidence in clashing:
        counts["shared_frame_conflicts"] += 1
        frames.pop(evidence, None)
        keep.add(evidence)
    found = {e: review.store.get(e) for e in frames}
    for evidence in [e for e, got in found.items() if got is None]:
        counts["missing_evidence"] += 1
        frames.pop(evidence)
        released.add(evidence)  # half gone (a maxmemory policy took a key): the release clears the rest and its hold
    stream_labels: dict[str, list[str]] = {}
    for label, d in frames.values():
        stream_labels.setdefault(d.stream, []).append(label)
    majority = {stream: max(sorted(set(labels)), key=labels.count) for stream, labels in stream_labels.items()}
    if not frames:
        raise ExportError(f"nothing to export: {counts['items']} decided item(s), {counts['unsure']} unsure, {counts['conflict']} with "
                          f"disagreeing reviewers, {counts['missing_evidence']} evidence frame(s) gone (nothing was written or released)")
    splits = assign_splits(majority, test_fraction, val_fraction)
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    by_label = {name: 0 for name in DATASET_LABELS}
    items: set[str] = set()
    for evidence, (label, d) in frames.items():
        record, image = found[evidence]  # type: ignore[misc]
        split = splits[d.stream]
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{evidence}.jpg"
        (folder / name).write_bytes(image)
        reviewers = sorted(r for r, v in d.labels.items() if v != c.LABEL_UNSURE)
        rows[split].append({
            "file_name": name, "text": record.text, "label": label, "group": d.stream,
            "score": record.score, "ema": record.ema, "threshold": record.threshold, "model": record.model, "stream": d.stream,
            "broadcast": record.broadcast, "pts_ms": record.pts_ms, "time": datetime.fromtimestamp(record.at_ms / 1000, UTC).isoformat(),
            "reviewer": ",".join(reviewers), "reviewers": reviewers, "item": d.item, "kind": d.kind,
            "evidence_kind": record.kind, "metadata": record.metadata,
        })
        by_label[label] += 1
        items.add(d.item)
        released.add(evidence)
    counts["exported_items"] = len(items)
    counts["rows"] = sum(len(r) for r in rows.values())
    out.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        if split_rows:
            (out / split / "metadata.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows))
    (out / "dataset.json").write_text(json.dumps({"labels": DATASET_LABELS, "positive": "violent"}, indent=2) + "\n")
    # Decisions recorded while this export ran (a second reviewer disagreeing, a changed mind) are
    # not in it: their items' evidence stays held for the next export rather than being released.
    through = entries[-1][0] if entries else ""
    later = review.feedback("(" + through) if through else review.feedback()
    changed = {f.get(c.FB_ITEM, "") for _, f in later}
    for d in decided.values():
        if d.item in changed:
            keep.update(d.evidence)
    for _, f in later:  # an item decided for the first time meanwhile may share a frame with one exported here
        keep.update(e for e in f.get(c.FB_EVIDENCE, "").split(",") if valid_id(e))
    released -= keep
    summary = {**counts, "by_label": by_label, "by_split": {k: len(v) for k, v in rows.items()}, "streams": dict(sorted(splits.items())),
               "since": since or "", "through": through, "test_fraction": test_fraction, "val_fraction": val_fraction,
               "decided_during_export": len(changed & set(decided)),
               "exported_at": datetime.now(UTC).isoformat(timespec="seconds"), "released": 0 if keep_held else len(released)}
    (out / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    _sync(out)  # on disk before the store lets the evidence expire: a crash after the release loses nothing
    if not keep_held and released:
        review.store.release(sorted(released))
    if entries:
        review.client.set(review.keys.last_export, json.dumps({"through": entries[-1][0], "at_ms": int(time.time() * 1000)}))
    return summary


def _sync(out: Path) -> None:
    """fsync every file and folder of the data set (files first, then their folders)."""
    paths = [*sorted(out.rglob("*"), key=lambda p: (p.is_dir(), -len(p.parts))), out]
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _not_before(entry_id: str, start: str) -> bool:
    """Whether a stream entry id is at or after ``start`` (both "ms-seq")."""
    def key(text: str) -> tuple[int, int]:
        ms, _, seq = text.partition("-")
        return int(ms), int(seq or 0)

    return key(entry_id) >= key(start)
