"""Text tokenised (and, for a frozen encoder, encoded) once, cached on disk next to the data.

A frozen MiniLM turns a caption into 25 × 384 floats: 1.9 GB for 50 000 captions, minutes of CPU
to compute. The result is kept in ``DATA/.framewatch-cache/text/`` (beside a manifest file for a
manifest data set; ``~/.cache/framewatch/text`` when the data folder is read-only) as ``.npy``
files written chunk by chunk (never the whole split in memory) and read back memory-mapped.

The key is the text encoder — its name, and for a local folder (the packaged MiniLM included) the
size and modification time of every file in it, so a retrained or upgraded encoder misses — its
``max_length``, frozen or not, and the captions. A hub name is keyed by name only: pin a local
copy to be safe against a new revision.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framewatch.training.models.encoders import TextEncoder, resolve_text_encoder

CACHE_DIR = ".framewatch-cache"
CHUNK = 256


def encoder_fingerprint(name: str) -> list[Any]:
    resolved = Path(resolve_text_encoder(name))
    if not resolved.is_dir():
        return [name]
    files = sorted(p for p in resolved.rglob("*") if p.is_file())
    return [name, str(resolved.resolve()), [[str(p.relative_to(resolved)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]]


def cache_key(encoder: str, max_length: int, frozen: bool, texts: list[str]) -> str:
    digest = hashlib.sha256(json.dumps([encoder_fingerprint(encoder), max_length, frozen], ensure_ascii=False).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()[:24]


def cache_folder(data: Path) -> Path:
    """``.framewatch-cache/text`` next to the data, or the user's cache when that is not writable."""
    base = data.parent if data.is_file() else data
    folder = base / CACHE_DIR / "text"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "framewatch" / "text"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _mapped(path: Path) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only on purpose: batches index (copy) it, nothing writes into it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.load(path, mmap_mode="r"))


def _read(folder: Path, rows: int, frozen: bool) -> dict[str, torch.Tensor] | None:
    try:
        out = {name: _mapped(folder / f"{name}.npy") for name in ("input_ids", "attention_mask")}
        if frozen:
            out["features"] = _mapped(folder / "features.npy")
        return out if len(out["input_ids"]) == rows else None
    except Exception:  # missing, partial or foreign files: recomputed and replaced
        return None


@torch.no_grad()
def _write(folder: Path, text: TextEncoder, texts: list[str], frozen: bool, device: torch.device) -> None:
    folder.mkdir(parents=True)
    ids = mask = features = None
    for start in range(0, len(texts), CHUNK):
        tokens = text.tokenize(texts[start : start + CHUNK])
        if ids is None:
            shape = (len(texts), tokens["input_ids"].shape[1])
            ids = np.lib.format.open_memmap(folder / "input_ids.npy", mode="w+", dtype=np.int64, shape=shape)
            mask = np.lib.format.open_memmap(folder / "attention_mask.npy", mode="w+", dtype=np.int64, shape=shape)
        assert mask is not None
        ids[start : start + CHUNK] = tokens["input_ids"].numpy()
        mask[start : start + CHUNK] = tokens["attention_mask"].numpy()
        if frozen:
            text.eval()
            hidden = text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)).float().cpu().numpy()
            if features is None:
                features = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32, shape=(len(texts), *hidden.shape[1:]))
            features[start : start + CHUNK] = hidden
    for array in (ids, mask, features):
        if array is not None:
            array.flush()


def cached_text(text: TextEncoder, cfg: Any, split: str, texts: list[str], frozen: bool, device: torch.device) -> tuple[dict[str, torch.Tensor], str]:
    """{"input_ids", "attention_mask"[, "features"]} for ``texts`` (memory-mapped), and "hit: …" or "written: …"."""
    key = cache_key(str(cfg.text_encoder), int(cfg.text_max_length), frozen, texts)
    folder = cache_folder(Path(cfg.data)) / f"{split}-{key}"
    cached = _read(folder, len(texts), frozen) if folder.is_dir() else None
    if cached is not None:
        return cached, f"hit: {folder}"
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write(partial, text, texts, frozen, device)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)  # atomic: DDP ranks may write the same entry
    except OSError as exc:
        if not folder.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another rank renamed first: use its copy
        del exc
    result = _read(folder, len(texts), frozen)
    if result is None:
        raise OSError(f"the text cache {folder} could not be read back")
    return result, f"written: {folder}"
