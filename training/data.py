"""Image–text data sets: the Hugging Face "imagefolder" layout, or a JSONL manifest of file paths.

::

    DATA/
      dataset.json            optional: {"labels": ["non-violent", "violent"], "positive": "violent"}
      train/metadata.jsonl    one JSON object a line: file_name, text, label, optional group
      train/*.png|jpg|webp
      val/ …                  optional: carved from train with a fixed seed when missing
      test/ …

    MANIFEST.jsonl            one JSON object a line: path (absolute, or relative to the manifest's
                              folder), label, text, split (train/val/test), optional group;
                              dataset.json beside it, as above

``label`` is 0/1 or a name from ``dataset.json``'s ``labels``. Images are decoded as RGB.
Bad rows are reported with split and line number; loading stops when more than
``max_bad_fraction`` of a split is bad. ``text`` may be empty (an untitled stream); modes that
never read text (``baseline``, a distilled student of a saved teacher) do not need it at all.

Loading reads the rows and each image's header (a file that is not an image is a bad row
here, not a crash mid-training), never the pixels: :mod:`framewatch.training.loader` decodes
them per batch. ``SplitData.images`` decodes a whole split on first use, for the small tools
(trivial baselines, CLIP) and tests.

**The positive (violent) class** is stated, never guessed: ``--positive-label``, else
``dataset.json``'s ``positive``, else the one label whose name, lower-cased and stripped of all
but letters, is ``violent`` or ``violence`` (so ``["Violence", "NonViolence"]`` gives
``Violence``). Anything else is refused with the labels named: a wrong positive class would
make the worker flag calm streams.

``group`` (a stream or clip id) keeps related frames together when validation is carved from
train, so frames of one clip never land on both sides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from framewatch.errors import FrameWatchError

DEFAULT_LABELS = ("non-violent", "violent")
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.15
VAL_SEED = 20240715  # fixed: the carved validation split never changes between runs


class DataError(FrameWatchError, ValueError):
    """The data set cannot be used; the message lists what is wrong and where."""


@dataclass(frozen=True)
class BadRow:
    split: str
    line: int
    reason: str
    source: str | None = None  # the manifest file's name, for a manifest data set

    def __str__(self) -> str:
        return f"{self.source or self.split + '/metadata.jsonl'} line {self.line}: {self.reason}"


@dataclass
class SplitData:
    name: str
    pixels: np.ndarray | None  # uint8 N×S×S×3 RGB at the training size, when decoded (see images)
    texts: list[str]
    labels: np.ndarray  # int64 N
    files: list[str] = field(default_factory=list)
    groups: list[str | None] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # the image files, for decoding per batch
    image_size: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> np.ndarray:
        """Every image of the split decoded at ``image_size`` (kept after the first call)."""
        if self.pixels is None:
            empty = np.zeros((0, self.image_size, self.image_size, 3), dtype=np.uint8)
            self.pixels = np.stack([decode_or_explain(p, self.image_size) for p in self.paths]) if self.paths else empty
        return self.pixels

    def subset(self, indices: np.ndarray, name: str) -> SplitData:
        groups = [self.groups[i] for i in indices] if self.groups else []
        paths = [self.paths[i] for i in indices] if self.paths else []
        pixels = self.pixels[indices] if self.pixels is not None else None
        return SplitData(name, pixels, [self.texts[i] for i in indices], self.labels[indices],
                         [self.files[i] for i in indices], groups, paths, self.image_size)


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
    return read_meta(root)[0]


def read_meta(root: Path) -> tuple[list[str], str | None]:
    """(labels, the positive label if dataset.json states it); beside a manifest file, its folder's."""
    meta = (root.parent if root.is_file() else root) / "dataset.json"
    if not meta.exists():
        return list(DEFAULT_LABELS), None
    try:
        data = json.loads(meta.read_text())
        labels = data["labels"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{meta} must be a JSON object with a 'labels' list ({exc})") from None
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{meta}: 'labels' must list at least two class names")
    positive = data.get("positive")
    if positive is not None and not isinstance(positive, str):
        raise DataError(f"{meta}: 'positive' must be one of the labels {labels}")
    return labels, positive


POSITIVE_NAMES = frozenset({"violent", "violence"})


def positive_index(labels: list[str], stated: str | None = None, source: str = "--positive-label") -> int:
    """The index of the violent class: stated, or inferred when exactly one label is named so."""
    if stated is not None:
        if stated not in labels:
            raise DataError(f"{source} {stated!r} is not one of the labels {labels}")
        return labels.index(stated)
    matches = [i for i, name in enumerate(labels) if "".join(ch for ch in name.lower() if ch.isalpha()) in POSITIVE_NAMES]
    if len(matches) != 1:
        raise DataError(f"cannot tell which label is the violent class among {labels}: state it with --positive-label NAME "
                        "or \"positive\": NAME in dataset.json")
    return matches[0]


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


# How training resizes frames; export writes it into model.json (preprocessing.resize) and the
# worker's decoder resizes with the same filter.
RESIZE = "bilinear"


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode as RGB (never BGR) and resize with bilinear interpolation, as the worker does."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def decode_or_explain(path: Path, size: int) -> np.ndarray:
    """:func:`load_image`, with a file whose header reads but whose body does not named in a DataError."""
    try:
        return load_image(path, size)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot decode {path} ({exc.__class__.__name__}: {exc}); `framewatch data check` lists every unreadable file") from None


def check_header(path: Path) -> None:
    """Open the image far enough to know its format and size (no pixels decoded)."""
    with Image.open(path) as image:
        image.size  # noqa: B018 — reading the header is the check


@dataclass(frozen=True)
class Row:
    """One usable row: where the image is, its text, label index and group."""

    path: Path
    file: str
    text: str
    label: int
    group: str | None


def _rows(lines: list[tuple[int, str]], split: str, labels: list[str], resolve: Any, needs_text: bool,
          check_images: bool = True) -> tuple[list[Row], list[BadRow], int]:
    """Parse metadata lines; ``resolve(row)`` gives (path, shown name) or raises DataError."""
    rows: list[Row] = []
    bad: list[BadRow] = []
    count = 0
    for number, line in lines:
        count += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(BadRow(split, number, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            bad.append(BadRow(split, number, "not a JSON object"))
            continue
        try:
            path, shown = resolve(row)
        except DataError as exc:
            bad.append(BadRow(split, number, str(exc)))
            continue
        text = row.get("text")
        if text is None and not needs_text:
            text = ""  # an image-only mode never reads it
        if not isinstance(text, str):
            bad.append(BadRow(split, number, f"missing text for {shown} (an untitled stream is \"text\": \"\")"))
            continue
        index = _label_index(row.get("label"), labels)
        if index is None:
            bad.append(BadRow(split, number, f"unknown label {row.get('label')!r} (labels: {labels})"))
            continue
        if not path.exists():
            bad.append(BadRow(split, number, f"missing file {shown}"))
            continue
        if check_images:
            try:
                check_header(path)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                bad.append(BadRow(split, number, f"unreadable image {shown} ({exc.__class__.__name__})"))
                continue
        group = row.get("group")
        rows.append(Row(path, shown, text, index, None if group is None else str(group)))
    return rows, bad, count


def read_split(root: Path, split: str, labels: list[str], image_size: int, needs_text: bool = True,
               check_images: bool = True) -> tuple[SplitData, list[BadRow], int]:
    """One split of an imagefolder data set, or of a manifest file (rows whose ``split`` is this one)."""
    if root.is_file():
        lines = [(n, line) for n, line in enumerate(root.read_text().splitlines(), start=1) if line.strip()]
        mine = []
        for number, line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            # Lines that are not JSON objects or name no valid split are reported once, with train.
            if (isinstance(row, dict) and row.get("split") == split) or (split == "train" and (not isinstance(row, dict) or row.get("split") not in SPLITS)):
                mine.append((number, line))

        def resolve(row: dict[str, Any]) -> tuple[Path, str]:
            raw = row.get("path")
            if not isinstance(raw, str) or not raw:
                raise DataError("missing path")
            if row.get("split") not in SPLITS:
                raise DataError(f"split {row.get('split')!r} is not one of {list(SPLITS)}")
            path = Path(raw)
            return (path if path.is_absolute() else root.parent / path), raw

        rows, bad, count = _rows(mine, split, labels, resolve, needs_text, check_images)
        bad = [BadRow(split, b.line, b.reason, root.name) for b in bad]
    else:
        folder = root / split
        meta = folder / "metadata.jsonl"
        if not meta.exists():
            raise DataError(f"{meta} is missing")

        def resolve(row: dict[str, Any]) -> tuple[Path, str]:
            file_name = row.get("file_name")
            if not isinstance(file_name, str) or not file_name:
                raise DataError("missing file_name")
            path = folder / file_name
            if not path.resolve().is_relative_to(folder.resolve()):
                raise DataError(f"file_name {file_name!r} points outside {folder}")
            return path, file_name

        lines = [(n, line) for n, line in enumerate(meta.read_text().splitlines(), start=1) if line.strip()]
        rows, bad, count = _rows(lines, split, labels, resolve, needs_text, check_images)
    data = SplitData(split, None, [r.text for r in rows], np.asarray([r.label for r in rows], dtype=np.int64),
                     [r.file for r in rows], [r.group for r in rows], [r.path for r in rows], image_size)
    return data, bad, count


def has_split(root: Path, split: str) -> bool:
    if root.is_file():
        for line in root.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("split") == split:
                return True
        return False
    return (root / split / "metadata.jsonl").exists()


def carve_validation(train: SplitData, fraction: float = VAL_FRACTION, seed: int = VAL_SEED) -> tuple[SplitData, SplitData]:
    """Stratified, seeded split of train into (train, val). Never touches test. Rows with a
    ``group`` move together (a clip's frames stay on one side); the rest move one by one."""
    rng = np.random.default_rng(seed)
    units: dict[object, list[int]] = {}
    for i in range(len(train)):
        group = train.groups[i] if train.groups else None
        units.setdefault(("group", group) if group is not None else ("row", i), []).append(i)
    by_label: dict[int, list[list[int]]] = {}
    for members in units.values():
        majority = int(np.bincount(train.labels[members]).argmax())
        by_label.setdefault(majority, []).append(members)
    val_idx: list[int] = []
    for label in sorted(by_label):
        members_list = by_label[label]
        order = rng.permutation(len(members_list))
        wanted = max(1, round(sum(len(m) for m in members_list) * fraction))
        taken = 0
        for j in order:
            if taken >= wanted:
                break
            if taken and taken + len(members_list[j]) > 2 * wanted:
                continue  # a large group would overshoot: another one may fit
            val_idx.extend(members_list[j])
            taken += len(members_list[j])
    mask = np.zeros(len(train), dtype=bool)
    mask[val_idx] = True
    for side, rows in (("train", ~mask), ("val", mask)):
        missing = sorted(set(np.unique(train.labels).tolist()) - set(np.unique(train.labels[rows]).tolist()))
        if missing:
            raise DataError(f"carving val from train by group leaves {side} without label(s) {missing}: the groups are too "
                            "few or too large; give a val/ split")
    return train.subset(np.flatnonzero(~mask), "train"), train.subset(np.flatnonzero(mask), "val")


def load_dataset(root: Path | str, image_size: int, max_bad_fraction: float = 0.01, splits: tuple[str, ...] = SPLITS,
                 positive_label: str | None = None, needs_text: bool = True, check_images: bool = True) -> Dataset:
    root = Path(root)
    if not root.is_dir() and not (root.is_file() and root.suffix == ".jsonl"):
        raise DataError(f"data {root} does not exist (a data folder, or a .jsonl manifest)")
    labels, stated = read_meta(root)
    if positive_label is not None:
        violent_index = positive_index(labels, positive_label)
    else:
        violent_index = positive_index(labels, stated, source=f"{root / 'dataset.json'} 'positive'")
    loaded: dict[str, SplitData] = {}
    all_bad: list[BadRow] = []
    too_bad: list[str] = []
    val_carved = False
    for split in splits:
        if split == "val" and not has_split(root, "val"):
            continue
        data, bad, rows = read_split(root, split, labels, image_size, needs_text, check_images)
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
    if "val" in loaded:
        positives = int((loaded["val"].labels == violent_index).sum())
        if positives == 0 or positives == len(loaded["val"]):
            # Model selection and the threshold are chosen on val: with one class, neither can be.
            raise DataError(f"split val has {positives} {labels[violent_index]!r} and {len(loaded['val']) - positives} other "
                            "frame(s): it needs both classes to select a model and choose a threshold")
    return Dataset(root, labels, violent_index, loaded, all_bad, val_carved)


def stratified_subset(split: SplitData, size: int, seed: int) -> SplitData:
    """``size`` rows of a split, each class in its proportion (at least one of each), drawn by ``seed``.
    The same seed gives the same rows, whatever trains on them: variants stay paired."""
    if size >= len(split):
        return split
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    classes, counts = np.unique(split.labels, return_counts=True)
    want = np.minimum(counts, np.maximum(1, np.round(counts / counts.sum() * size))).astype(int)
    while want.sum() > size:
        want[np.argmax(want)] -= 1
    while want.sum() < size:  # rounding down left rows: give them to the class with the most to spare
        want[np.argmax(counts - want)] += 1
    chosen = np.concatenate([rng.choice(np.flatnonzero(split.labels == c), n, replace=False) for c, n in zip(classes, want, strict=True)])
    return split.subset(np.sort(chosen), split.name)


def imagefolder_frames(root: Path, height: int, width: int, count: int) -> list[np.ndarray]:
    """Up to ``count`` RGB frames of an imagefolder data set (test split first), resized as training
    resizes them. Unreadable rows are skipped."""
    images: list[np.ndarray] = []
    for split in ("test", "val", "train"):
        meta = root / split / "metadata.jsonl"
        if not meta.exists():
            continue
        for line in meta.read_text().splitlines():
            if len(images) >= count:
                return images
            try:
                with Image.open(root / split / json.loads(line)["file_name"]) as image:
                    rgb = image.convert("RGB")
                    if rgb.size != (width, height):
                        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
                    images.append(np.asarray(rgb, dtype=np.uint8))
            except (OSError, ValueError, KeyError):
                continue
    return images
