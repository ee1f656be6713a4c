"""The same image in two splits: found by file content (SHA-256), before any training.

This is the cheap part of ``framewatch data check`` that ``framewatch train`` runs first (it reads
every file once; 50 000 frames of ~15 KB hash in a few seconds). Near-duplicates (the same frame
re-encoded or resized) need decoding and are left to ``data check``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from framewatch.training.data import DataError, Dataset, SplitData


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cross_split_duplicates(splits: dict[str, SplitData]) -> list[dict[str, list[str]]]:
    """Groups of identical files found in more than one split: [{split: [files]}, …]."""
    seen: dict[str, dict[str, list[str]]] = {}
    for name, split in splits.items():
        for path, shown in zip(split.paths, split.files, strict=True):
            seen.setdefault(file_digest(path), {}).setdefault(name, []).append(shown)
    return [where for where in seen.values() if len(where) > 1]


def refuse_leakage(dataset: Dataset) -> None:
    leaks = cross_split_duplicates(dataset.splits)
    if not leaks:
        return
    shown = "\n  ".join("; ".join(f"{split}: {', '.join(files[:3])}" for split, files in leak.items()) for leak in leaks[:20])
    more = f"\n  … and {len(leaks) - 20} more" if len(leaks) > 20 else ""
    raise DataError(f"{len(leaks)} image(s) are in more than one split (the test score would count frames the model trained on):\n  "
                    f"{shown}{more}\nremove them from one side, or train anyway with --allow-leakage "
                    "(`framewatch data check` also finds near-duplicates)")
