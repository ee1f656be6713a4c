"""The same image in two splits: found by file content (SHA-256), before any training.

This is the cheap part of ``framewatch data check`` that ``framewatch train`` runs first: a stat
of every file, and a hash of those whose size appears in two splits. Near-duplicates (the same frame
re-encoded or resized) need decoding and are left to ``data check``. Identical blank frames (a
black fade, a title card) are not counted: different videos share them. A validation split carved
from train counts as train's side: the same file twice inside train is not leakage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from framewatch.training.data import DataError, Dataset, SplitData


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def blank_image(image: Image.Image) -> bool:
    """A frame of (almost) one colour — black fade, title card — is no evidence of leakage:
    videos share them without sharing content."""
    return float(np.asarray(image.convert("L").resize((32, 32)), dtype=np.float32).std()) < 3.0


def is_blank(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return blank_image(image)
    except (OSError, ValueError):
        return False


def cross_split_duplicates(splits: dict[str, SplitData], merge: dict[str, str] | None = None) -> list[dict[str, list[str]]]:
    """Groups of identical files found in more than one split: [{split: [files]}, …]. ``merge``
    maps a split to another it counts as (a val carved from train is train's side). Blank frames
    are left out.

    Files are first grouped by size (a stat each): only sizes found in two splits can hide the
    same bytes, so only those files are read and hashed (50 000 frames: ~1 s instead of ~15 s)."""
    merge = merge or {}
    by_size: dict[int, list[tuple[str, Path, str]]] = {}
    for name, split in splits.items():
        side = merge.get(name, name)
        for path, shown in zip(split.paths, split.files, strict=True):
            by_size.setdefault(path.stat().st_size, []).append((side, path, f"{name}: {shown}" if name in merge else shown))
    seen: dict[str, dict[str, list[str]]] = {}
    first: dict[str, Path] = {}
    for group in by_size.values():
        if len({side for side, _, _ in group}) < 2:
            continue
        for side, path, shown in group:
            digest = file_digest(path)
            first.setdefault(digest, path)
            seen.setdefault(digest, {}).setdefault(side, []).append(shown)
    return [where for digest, where in seen.items() if len(where) > 1 and not is_blank(first[digest])]


def refuse_leakage(dataset: Dataset) -> None:
    leaks = cross_split_duplicates(dataset.splits, {"val": "train"} if dataset.val_carved else None)
    if not leaks:
        return
    shown = "\n  ".join("; ".join(f"{split}: {', '.join(files[:3])}" for split, files in leak.items()) for leak in leaks[:20])
    more = f"\n  … and {len(leaks) - 20} more" if len(leaks) > 20 else ""
    raise DataError(f"{len(leaks)} image(s) are in more than one split (the test score would count frames the model trained on):\n  "
                    f"{shown}{more}\nremove them from one side, or train anyway with --allow-leakage "
                    "(`framewatch data check` also finds near-duplicates)")
