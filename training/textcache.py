"""Text tokenised (and, for a frozen encoder, encoded) once, cached on disk next to the data.

A frozen MiniLM turns a caption into 25 × 384 floats: 1.9 GB for 50 000 captions, minutes of CPU
to compute. The result is kept in ``DATA/.framewatch-cache/text/`` (beside a manifest file for a
manifest data set; ``~/.cache/framewatch/text`` when the data folder is read-only), keyed by the
text encoder's name, its ``max_length``, whether it is frozen, and the captions themselves, so a
second run with the same encoder and data reads it back (memory-mapped) and any change misses.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from framewatch.training.models.encoders import TextEncoder

CACHE_DIR = ".framewatch-cache"


def cache_key(encoder: str, max_length: int, frozen: bool, texts: list[str]) -> str:
    digest = hashlib.sha256(json.dumps([encoder, max_length, frozen], ensure_ascii=False).encode())
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


@torch.no_grad()
def encode(text: TextEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    text.eval()
    chunks = []
    for start in range(0, len(input_ids), batch_size):
        chunks.append(text(input_ids[start : start + batch_size].to(device), attention_mask[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0)


def cached_text(text: TextEncoder, cfg: Any, split: str, texts: list[str], frozen: bool, device: torch.device) -> tuple[dict[str, torch.Tensor], str]:
    """{"input_ids", "attention_mask"[, "features"]} for ``texts``, and "hit" or "written: PATH"."""
    key = cache_key(str(cfg.text_encoder), int(cfg.text_max_length), frozen, texts)
    path = cache_folder(Path(cfg.data)) / f"{split}-{key}.pt"
    if path.exists():
        try:
            cached: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if len(cached["input_ids"]) == len(texts) and (not frozen or "features" in cached):
                return cached, f"hit: {path}"
        except (RuntimeError, OSError, KeyError, EOFError):
            pass  # a partial or foreign file: recomputed and replaced
    tokens = text.tokenize(texts)
    result = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    if frozen:
        result["features"] = encode(text, result["input_ids"], result["attention_mask"], device)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        torch.save(result, partial)
        partial.replace(path)  # atomic: DDP ranks may write the same file
        status = f"written: {path}"
    except OSError as exc:
        partial.unlink(missing_ok=True)
        status = f"not cached ({exc.strerror or exc})"
    return result, status
