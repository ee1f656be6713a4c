"""``framewatch data check``: what is wrong with a data set, before hours are spent training on it.

Reads every row and decodes every image once, and reports:

* bad rows (not JSON, no file, unknown label, missing text) and unreadable images (decoded in full:
  a truncated JPEG passes a header check and fails here);
* class balance per split;
* leakage: the same file in two splits (SHA-256) and near-duplicates across splits (a 64-bit
  difference hash of the 9×8 grey image within ``near_bits`` bits: the same frame re-encoded,
  resized or slightly recoloured);
* captions: empty ones (an untitled stream, accepted) and how many are longer than the text
  encoder's ``max_length`` tokens, counted with its own tokenizer (truncated in training);
* image sizes (smallest, median, largest; how many are smaller than the training size).

``framewatch train`` runs the cheap part first (exact duplicates across splits,
:mod:`framewatch.training.leakage`) and refuses a leaking data set unless ``--allow-leakage``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from framewatch.training.data import SPLITS, DataError, has_split, positive_index, read_meta, read_split
from framewatch.training.leakage import blank_image, file_digest


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: is each pixel of the 9×8 grey image brighter than its right neighbour."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def _token_lengths(texts: list[str], text_encoder: str) -> tuple[list[int], str]:
    """Tokens per caption with the encoder's tokenizer (special tokens included), or words if it cannot load."""
    try:
        from transformers import AutoTokenizer

        from framewatch.training.models.encoders import resolve_text_encoder

        tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder(text_encoder))
        ids = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"] if texts else []
        return [len(x) for x in ids], f"{text_encoder} tokenizer"
    except Exception as exc:  # no hub, no such folder: an estimate beats no answer
        return [len(t.split()) + 2 for t in texts], f"whitespace words + 2 ({text_encoder} tokenizer unavailable: {exc.__class__.__name__})"


def check_dataset(root: Path, text_encoder: str = "minilm", max_length: int = 25, image_size: int = 96,
                  near_bits: int = 4, progress: bool = False, needs_text: bool = True) -> dict[str, Any]:
    """The report as a dict (``problems`` lists what should stop a training run). ``needs_text``
    False checks a data set for image-only training: rows without text are fine there."""
    from tqdm import tqdm

    report: dict[str, Any] = {"data": str(root), "splits": {}, "problems": []}
    labels, stated = read_meta(root)
    report["labels"] = labels
    try:
        report["positive"] = labels[positive_index(labels, stated)]
    except DataError as exc:
        report["positive"] = None
        report["problems"].append(str(exc))
    hashes: dict[str, list[tuple[int, str]]] = {}
    digests: dict[str, dict[str, list[str]]] = {}
    all_texts: list[str] = []
    sizes: list[tuple[int, int]] = []
    for split in SPLITS:
        if not has_split(root, split):
            report["splits"][split] = None
            continue
        data, bad, rows = read_split(root, split, labels, image_size, needs_text=needs_text, check_images=False)
        unreadable: list[str] = []
        kept: list[int] = []
        for i, path in enumerate(tqdm(data.paths, desc=f"check {split}", disable=not progress, unit="img")):
            try:
                with Image.open(path) as image:
                    image.load()
                    sizes.append(image.size)
                    hashes.setdefault(split, []).append((dhash(image), data.files[i]))
                    blank = blank_image(image)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
                unreadable.append(f"{data.files[i]} ({exc.__class__.__name__})")
                continue
            if not blank:  # identical black or title frames are shared by unrelated videos
                digests.setdefault(file_digest(path), {}).setdefault(split, []).append(data.files[i])
            kept.append(i)
        counts = np.bincount(data.labels[kept], minlength=len(labels)) if kept else np.zeros(len(labels), dtype=int)
        texts = [data.texts[i] for i in kept]
        all_texts.extend(texts)
        report["splits"][split] = {
            "rows": rows, "usable": len(kept), "bad_rows": [str(b) for b in bad], "unreadable": unreadable,
            "classes": {label: int(n) for label, n in zip(labels, counts, strict=True)},
            "empty_captions": sum(1 for t in texts if not t.strip()),
        }
        if bad or unreadable:
            report["problems"].append(f"{split}: {len(bad)} bad row(s), {len(unreadable)} unreadable image(s)")
        if kept and min(counts) == 0:
            report["problems"].append(f"{split}: no {labels[int(np.argmin(counts))]!r} frames")
    exact = [where for where in digests.values() if len(where) > 1]
    exact_group = {(split, f): n for n, where in enumerate(exact) for split, files in where.items() for f in files}
    near = _near_duplicates(hashes, near_bits, exact_group)
    report["leakage"] = {"exact": exact, "near": near, "near_bits": near_bits}
    if exact:
        report["problems"].append(f"{len(exact)} file(s) in more than one split (exact copies)")
    if near:
        report["problems"].append(f"{len(near)} near-duplicate pair(s) across splits (within {near_bits} of 64 hash bits)")
    lengths, counted_with = _token_lengths(all_texts, text_encoder)
    over = sum(1 for n in lengths if n > max_length)
    report["captions"] = {
        "count": len(lengths), "counted_with": counted_with, "max_length": max_length, "truncated": over,
        "truncated_fraction": round(over / len(lengths), 4) if lengths else 0.0,
        "tokens_p50": int(np.median(lengths)) if lengths else 0, "tokens_p95": int(np.percentile(lengths, 95)) if lengths else 0,
        "tokens_max": max(lengths, default=0), "empty": sum(1 for t in all_texts if not t.strip()),
    }
    if sizes:
        widths, heights = np.array([w for w, _ in sizes]), np.array([h for _, h in sizes])
        report["images"] = {"count": len(sizes), "min": [int(widths.min()), int(heights.min())],
                            "median": [int(np.median(widths)), int(np.median(heights))], "max": [int(widths.max()), int(heights.max())],
                            "smaller_than_training_size": int(((widths < image_size) | (heights < image_size)).sum()), "image_size": image_size}
    return report


POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _bits_set(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy < 2 has no bitwise_count)."""
    return POPCOUNT[values.view(np.uint8).reshape(-1, 8)].sum(axis=1)


def _near_duplicates(hashes: dict[str, list[tuple[int, str]]], bits: int, exact_group: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    names = [s for s in SPLITS if hashes.get(s)]
    for a_index, a in enumerate(names):
        values_a = np.array([h for h, _ in hashes[a]], dtype=np.uint64)
        for b in names[a_index + 1 :]:
            for h, file_b in hashes[b]:
                distance = _bits_set(values_a ^ np.uint64(h))
                for j in np.flatnonzero(distance <= bits)[:5]:
                    file_a = hashes[a][int(j)][1]
                    group = exact_group.get((a, file_a))
                    if group is not None and group == exact_group.get((b, file_b)):
                        continue  # already reported as the same file
                    found.append({a: file_a, b: file_b, "bits": int(distance[j])})
    return found


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"data check: {report['data']}")
    for column in ("split", "rows", "usable", "bad rows", "unreadable", *report["labels"], "empty captions"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, info in report["splits"].items():
        if info is None:
            table.add_row(split, "—", "", "", "", *[""] * len(report["labels"]), "")
            continue
        table.add_row(split, str(info["rows"]), str(info["usable"]), str(len(info["bad_rows"])), str(len(info["unreadable"])),
                      *[str(info["classes"][label]) for label in report["labels"]], str(info["empty_captions"]))
    console.print(table)
    captions = report["captions"]
    console.print(f"captions: {captions['count']}, tokens p50 {captions['tokens_p50']} / p95 {captions['tokens_p95']} / max "
                  f"{captions['tokens_max']} ({captions['counted_with']}); longer than max_length {captions['max_length']}: "
                  f"{captions['truncated']} ({captions['truncated_fraction']:.1%}), empty: {captions['empty']}")
    if "images" in report:
        images = report["images"]
        console.print(f"images: {images['count']}, smallest {images['min'][0]}×{images['min'][1]}, median {images['median'][0]}×"
                      f"{images['median'][1]}, largest {images['max'][0]}×{images['max'][1]}; smaller than {images['image_size']} px: "
                      f"{images['smaller_than_training_size']}")
    leakage = report["leakage"]
    for leak in leakage["exact"][:10]:
        console.print("[red]same file in two splits[/red]: " + "; ".join(f"{s}: {', '.join(f[:3])}" for s, f in leak.items()))
    for pair in leakage["near"][:10]:
        console.print("[yellow]near-duplicate across splits[/yellow]: " + ", ".join(f"{k}: {v}" for k, v in pair.items()))
    for split, info in report["splits"].items():
        for line in ((info or {}).get("bad_rows", []) + [f"{split}: unreadable {u}" for u in (info or {}).get("unreadable", [])])[:20]:
            console.print(f"[red]{line}[/red]")
    if report["problems"]:
        console.print("[bold red]problems:[/bold red] " + "; ".join(report["problems"]))
    else:
        console.print("[green]no problems found[/green]")


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
