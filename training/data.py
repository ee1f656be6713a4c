"""Image–text data sets in the Hugging Face "imagefolder" layout.

::

    DATA/
      dataset.json            optional: {"labels": ["non-violent", "violent"]}
      train/metadata.jsonl    one JSON object a line: file_name, text, label
      train/*.png|jpg|webp
      val/ …                  optional: carved from train with a fixed seed when missing
      test/ …

``label`` is 0/1 or a name from ``dataset.json``'s ``labels``. Images are decoded as RGB.
Bad rows are reported with split and line number; loading stops when more than
``max_bad_fraction`` of a split is bad.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_LABELS = ("non-violent", "violent")
VIOLENT_LABEL = "violent"
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.15
VAL_SEED = 20240715  # fixed: the carved validation split never changes between runs


class DataError(ValueError):
    """The data set cannot be used; the message lists what is wrong and where."""


@dataclass(frozen=True)
class BadRow:
    split: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.split}/metadata.jsonl line {self.line}: {self.reason}"


@dataclass
class SplitData:
    name: str
    images: np.ndarray  # uint8 N×S×S×3, RGB, resized to the training size
    texts: list[str]
    labels: np.ndarray  # int64 N
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray, name: str) -> SplitData:
        return SplitData(name, self.images[indices], [self.texts[i] for i in indices], self.labels[indices], [self.files[i] for i in indices])


@dataclass
class Dataset:
    root: Path
    labels: list[str]
    violent_index: int
    splits: dict[str, SplitData]
    bad_rows: list[BadRow]
    val_carved: bool

    def __getitem__(self, split: str) -> SplitData:
        return self.splits[split]


def read_labels(root: Path) -> list[str]:
    meta = root / "dataset.json"
    if not meta.exists():
        return list(DEFAULT_LABELS)
    try:
        labels = json.loads(meta.read_text())["labels"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{meta} must be a JSON object with a 'labels' list ({exc})") from None
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{meta}: 'labels' must list at least two class names")
    return labels


def _label_index(raw: object, labels: list[str]) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 <= raw < len(labels) else None
    if isinstance(raw, str):
        if raw in labels:
            return labels.index(raw)
        if raw.isdigit() and int(raw) < len(labels):
            return int(raw)
    return None


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode as RGB (never BGR) and resize with bilinear interpolation, as the worker does."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def read_split(root: Path, split: str, labels: list[str], image_size: int) -> tuple[SplitData, list[BadRow], int]:
    folder = root / split
    meta = folder / "metadata.jsonl"
    if not meta.exists():
        raise DataError(f"{meta} is missing")
    images: list[np.ndarray] = []
    texts: list[str] = []
    targets: list[int] = []
    files: list[str] = []
    bad: list[BadRow] = []
    rows = 0
    for number, line in enumerate(meta.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rows += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(BadRow(split, number, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            bad.append(BadRow(split, number, "not a JSON object"))
            continue
        file_name, text, raw_label = row.get("file_name"), row.get("text"), row.get("label")
        if not isinstance(file_name, str) or not file_name:
            bad.append(BadRow(split, number, "missing file_name"))
            continue
        if not isinstance(text, str) or not text.strip():
            bad.append(BadRow(split, number, f"missing text for {file_name}"))
            continue
        index = _label_index(raw_label, labels)
        if index is None:
            bad.append(BadRow(split, number, f"unknown label {raw_label!r} (labels: {labels})"))
            continue
        path = folder / file_name
        if not path.resolve().is_relative_to(folder.resolve()):
            bad.append(BadRow(split, number, f"file_name {file_name!r} points outside {folder}"))
            continue
        if not path.exists():
            bad.append(BadRow(split, number, f"missing file {file_name}"))
            continue
        try:
            pixels = load_image(path, image_size)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            bad.append(BadRow(split, number, f"unreadable image {file_name} ({exc.__class__.__name__})"))
            continue
        images.append(pixels)
        texts.append(text)
        targets.append(index)
        files.append(file_name)
    empty = np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    data = SplitData(split, np.stack(images) if images else empty, texts, np.asarray(targets, dtype=np.int64), files)
    return data, bad, rows


def carve_validation(train: SplitData, fraction: float = VAL_FRACTION, seed: int = VAL_SEED) -> tuple[SplitData, SplitData]:
    """Stratified, seeded split of train into (train, val). Never touches test."""
    rng = np.random.default_rng(seed)
    val_idx: list[int] = []
    for label in np.unique(train.labels):
        members = np.flatnonzero(train.labels == label)
        rng.shuffle(members)
        val_idx.extend(members[: max(1, round(len(members) * fraction))].tolist())
    mask = np.zeros(len(train), dtype=bool)
    mask[val_idx] = True
    return train.subset(np.flatnonzero(~mask), "train"), train.subset(np.flatnonzero(mask), "val")


def load_dataset(root: Path | str, image_size: int, max_bad_fraction: float = 0.01, splits: tuple[str, ...] = SPLITS) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    labels = read_labels(root)
    violent_index = labels.index(VIOLENT_LABEL) if VIOLENT_LABEL in labels else len(labels) - 1
    loaded: dict[str, SplitData] = {}
    all_bad: list[BadRow] = []
    too_bad: list[str] = []
    val_carved = False
    for split in splits:
        if split == "val" and not (root / "val" / "metadata.jsonl").exists():
            continue
        data, bad, rows = read_split(root, split, labels, image_size)
        all_bad.extend(bad)
        if rows and len(bad) / rows > max_bad_fraction:
            too_bad.append(f"{split}: {len(bad)} of {rows} rows are bad ({len(bad) / rows:.1%} > {max_bad_fraction:.1%})")
        loaded[split] = data
    if too_bad:
        shown = "\n  ".join(str(b) for b in all_bad[:50])
        more = f"\n  … and {len(all_bad) - 50} more" if len(all_bad) > 50 else ""
        raise DataError("too many bad rows, stopping before training:\n  " + "\n  ".join(too_bad) + "\nbad rows:\n  " + shown + more)
    if "val" in splits and "val" not in loaded and "train" in loaded:
        loaded["train"], loaded["val"] = carve_validation(loaded["train"])
        val_carved = True
    for name, data in loaded.items():
        if len(data) == 0:
            raise DataError(f"split {name} has no usable rows")
    return Dataset(root, labels, violent_index, loaded, all_bad, val_carved)
