"""``framewatch data from-videos``: an imagefolder data set cut from labelled videos by the worker's decoder.

The manifest (CSV with a header, or JSONL) has one row per video (or Kafka-contract segment):

=========== ===========================================================================
path        the file, absolute or relative to the manifest's folder
label       0/1 or a label name (``--labels``, default non-violent, violent)
text        the stream's metadata text (may be empty: an untitled stream)
start_s     optional: first second to take (the video's own timestamps)
end_s       optional: the second to stop before
split       optional: train/val/test; else by video, seeded (70/15/15), so a video's
            frames never land in two splits
group       optional: the clip or stream id (default: the path)
=========== ===========================================================================

Frames are sampled and resized by :func:`framewatch.worker.decode.decode_segment` with the
worker's decode defaults (:class:`framewatch.config.DecodeSettings`, strict mode) and the
sampling and resize given here (``--sample-fps``/``--keyframes-only``, the model's input size
and resize filter), then written as lossless PNG at that size. A decoded frame therefore becomes
the same pixels in training as when the worker scores it (max |Δ| = 0,
tests/unit/test_data_tools.py), which PIL's resize in ``load_image`` could not promise (mean |Δ|
0.66/255 against swscale's bilinear). Which frames are sampled follows the video's own
timestamps; the worker follows the stream time its producer declares, so on a stream whose
segments do not start on a second the two may pick neighbouring frames. Each video is decoded
whole (its bytes in memory); a time range only selects frames.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PIL import Image

from framewatch.training.data import DEFAULT_LABELS, SPLITS, DataError

EXTENSION_TYPES = {".ts": "video/mp2t", ".mp4": "video/mp4", ".m4s": "video/iso.segment", ".mov": "video/mp4",
                   ".mkv": "video/x-matroska", ".webm": "video/webm", ".flv": "video/x-flv"}


@dataclass(frozen=True)
class VideoRow:
    line: int
    path: Path
    label: int
    text: str
    start_s: float | None
    end_s: float | None
    split: str | None
    group: str


def read_video_manifest(manifest: Path, labels: list[str]) -> list[VideoRow]:
    if not manifest.is_file():
        raise DataError(f"manifest {manifest} does not exist")
    if manifest.suffix == ".jsonl":
        raw = []
        for number, line in enumerate(manifest.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    raw.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{manifest} line {number}: not valid JSON ({exc.msg})") from None
    else:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:  # a spreadsheet's byte-order mark
            raw = [(number, row) for number, row in enumerate(csv.DictReader(handle), start=2)]
    rows = []
    problems = []
    for number, row in raw:
        where = f"{manifest.name} line {number}"
        if not isinstance(row, dict) or not row.get("path"):
            problems.append(f"{where}: no path")
            continue
        label = row.get("label")
        if isinstance(label, str) and label in labels:
            index = labels.index(label)
        elif str(label).isdigit() and int(str(label)) < len(labels):
            index = int(str(label))
        else:
            problems.append(f"{where}: unknown label {label!r} (labels: {labels})")
            continue
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            problems.append(f"{where}: split {split!r} is not one of {list(SPLITS)}")
            continue
        try:
            start = float(row["start_s"]) if row.get("start_s") not in (None, "") else None
            end = float(row["end_s"]) if row.get("end_s") not in (None, "") else None
        except ValueError:
            problems.append(f"{where}: start_s/end_s must be seconds")
            continue
        path = Path(str(row["path"]))
        path = path if path.is_absolute() else manifest.parent / path
        rows.append(VideoRow(number, path, index, str(row.get("text") or ""), start, end, split, str(row.get("group") or row["path"])))
    if problems:
        raise DataError(f"{len(problems)} bad row(s) in {manifest}:\n  " + "\n  ".join(problems[:30]))
    return rows


def assign_split(group: str, seed: int, val: float = 0.15, test: float = 0.15) -> str:
    """A video's split from its group and the seed: stable, and the same for every frame of it."""
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
    return "test" if draw < test else "val" if draw < test + val else "train"


def frames_from_videos(manifest: Path, out: Path, image_size: int, sample_fps: float = 1.0, keyframes_only: bool = False,
                       interpolation: str = "bilinear", labels: list[str] | None = None, seed: int = 0,
                       progress: bool = True) -> dict[str, Any]:
    """Write ``out`` (imagefolder with metadata.jsonl per split); returns what was written and skipped."""
    from tqdm import tqdm

    from framewatch.config import DecodeSettings
    from framewatch.worker.decode import DecodeError, decode_request, decode_segment

    labels = list(labels or DEFAULT_LABELS)
    rows = read_video_manifest(manifest, labels)
    settings = DecodeSettings(sample_fps=sample_fps, keyframes_only=keyframes_only, max_frames=10_000_000, max_decode_seconds=3600.0)
    model_input = SimpleNamespace(input_size=(image_size, image_size), interpolation=interpolation)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty: write a new data set into a new folder (old frames would mix with the new ones)")
    out.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    failed: list[str] = []
    empty: list[str] = []
    for row in tqdm(rows, desc="videos", disable=not progress, unit="video"):
        content_type = EXTENSION_TYPES.get(row.path.suffix.lower())
        try:
            payload = row.path.read_bytes()
            result = decode_segment(decode_request(settings, model_input, payload, content_type, None, None))
        except (OSError, DecodeError) as exc:
            failed.append(f"{row.path} (line {row.line}): {exc}")
            continue
        split = row.split or assign_split(row.group, seed)
        folder = out / split
        folder.mkdir(exist_ok=True)
        stem = hashlib.sha256(f"{row.path}:{row.line}".encode()).hexdigest()[:8] + "-" + row.path.stem  # one name per manifest row
        before = len(metadata[split])
        for frame in result.frames:
            if (row.start_s is not None and frame.pts_ms < row.start_s * 1000) or (row.end_s is not None and frame.pts_ms >= row.end_s * 1000):
                continue
            name = f"{stem}-{frame.pts_ms:09d}.png"
            Image.fromarray(frame.pixels).save(folder / name)
            metadata[split].append({"file_name": name, "text": row.text, "label": labels[row.label], "group": row.group,
                                    "source": str(row.path), "pts_ms": frame.pts_ms})
        if len(metadata[split]) == before:
            empty.append(f"{row.path} (line {row.line}): no sampled frame in its time range")
    for split, entries in metadata.items():
        if entries:
            (out / split / "metadata.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
    positive = next((name for name in labels if "".join(c for c in name.lower() if c.isalpha()) in ("violent", "violence")), None)
    (out / "dataset.json").write_text(json.dumps({"labels": labels, **({"positive": positive} if positive else {})}) + "\n")
    written = {split: len(entries) for split, entries in metadata.items()}
    if not sum(written.values()):
        raise DataError("no frame was written:\n  " + "\n  ".join(failed[:20] or ["the time ranges select no sampled frame"]))
    return {"frames": written, "videos": len(rows) - len(failed), "failed": failed, "empty": empty, "image_size": image_size,
            "sample_fps": sample_fps, "keyframes_only": keyframes_only, "interpolation": interpolation}
