"""``framewatch bench train``: memory and speed of the training data paths, streamed and in memory.

    framewatch bench train --images 50000 --image-size 224 --json train_bench.json

Writes a synthetic set of ``--images`` frames (or takes ``--data``), then runs each path in its
own process (so one path's memory never counts against the other's): the training process
loads the split, builds the loader (the in-memory path decodes every frame first, with the same
loader processes), and trains ``--steps`` steps of the image classifier. Per path:

* ``first_step_seconds``: from the process's start (imports included) through `framewatch train`'s
  own preparation (rows, the leakage check, the loader; the in-memory path decodes every frame)
  to the end of the first step;
* ``images_per_second``: steady state, the steps after the first ``--warmup``;
* ``peak_rss_mb``: the training process's peak resident memory (``ru_maxrss``);
* ``loader_rss_mb``: the loader processes' resident memory, summed, at its highest (sampled each step).

The in-memory path is skipped, and says so, when its frames would take more than half the
machine's available memory. Times are this machine's: compare the two paths within one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROCESS_START = time.monotonic()


def _child(path: str, data: Path, image_size: int, encoder: str, steps: int, warmup: int, batch_size: int, workers: int | None) -> dict[str, Any]:
    """One data path, as `framewatch train` prepares it (rows, leakage check, loader) and trains."""
    import psutil
    import torch

    from framewatch.training.config import TrainConfig
    from framewatch.training.distributed import Placement
    from framewatch.training.loader import batch_indices, flip_batch
    from framewatch.training.models import ImageClassifier, build_image_encoder
    from framewatch.training.train import image_forward, prepare

    cfg = TrainConfig(data=data, out=Path(tempfile.mkdtemp(prefix="framewatch-bench-run-")), mode="baseline", image_encoder=encoder,
                      pretrained=False, image_size=image_size, batch_size=batch_size, loader=path, loader_workers=workers,
                      cache_mb=1 << 30, progress=False)
    prep = prepare(cfg, Placement(torch.device("cpu")), needs_text=False)
    loaded = time.monotonic()
    split = prep.splits["train"]
    model = ImageClassifier(build_image_encoder(encoder, pretrained=False), 2)
    forward = image_forward(model, prep)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    order = batch_indices(len(split), batch_size, True, generator)[:steps]
    me = psutil.Process()
    loader_rss = 0.0
    stamps: list[float] = []
    first_step = None
    model.train()
    try:
        for rows, pixels in split.loader(order):
            logits = forward({"pixels": flip_batch(pixels, generator)}, True)
            loss = torch.nn.functional.cross_entropy(logits, split.labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            stamps.append(time.monotonic())
            if first_step is None:
                first_step = stamps[-1] - PROCESS_START
            loader_rss = max(loader_rss, sum(c.memory_info().rss for c in me.children(recursive=True)) / 2**20)
    finally:
        prep.close()
    measured = stamps[warmup:]
    rate = (len(measured) - 1) * batch_size / (measured[-1] - measured[0]) if len(measured) > 1 else None
    assert prep.loader is not None
    return {"path": path, "images": len(split), "steps": len(stamps), "batch_size": batch_size, "loader_workers": prep.loader.workers,
            "first_step_seconds": round(first_step or 0.0, 2), "prepare_seconds": round(loaded - PROCESS_START, 2),
            "images_per_second": round(rate, 2) if rate else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "loader_rss_mb": round(loader_rss, 1)}


# Rendering a synthetic frame costs ~15-70 ms (50 000 would take up to an hour); decoding does not care
# whether two files hold the same picture, so the set is this many rendered frames and copies of them.
DISTINCT_FRAMES = 2000


def fill_with_copies(split: Path, total: int) -> None:
    """Grow an imagefolder split to ``total`` rows with file copies of its frames (distinct files)."""
    import shutil

    rows = [json.loads(line) for line in (split / "metadata.jsonl").read_text().splitlines()]
    out = list(rows)
    for i in range(len(rows), total):
        row = rows[i % len(rows)]
        name = f"copy-{i:06d}{Path(row['file_name']).suffix}"
        shutil.copyfile(split / row["file_name"], split / name)
        out.append({**row, "file_name": name})
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))


def bench_train(images: int, image_size: int, encoder: str = "efficientnet_lite0", data: Path | None = None, steps: int = 30,
                warmup: int = 5, batch_size: int = 16, workers: int | None = None, paths: tuple[str, ...] = ("streamed", "memory"),
                progress: Any = print) -> dict[str, Any]:
    import psutil

    from framewatch.machine import describe

    result: dict[str, Any] = {"machine": describe(), "image_size": image_size, "image_encoder": encoder, "steps": steps,
                              "warmup_steps": warmup, "batch_size": batch_size}
    scratch = None
    if data is None:
        from framewatch.training.synth import write_dataset

        scratch = tempfile.TemporaryDirectory(prefix="framewatch-bench-train-")
        data = Path(scratch.name) / "data"
        started = time.monotonic()
        distinct = min(images, DISTINCT_FRAMES)
        progress(f"writing {images} synthetic {image_size}px frames to {data} ({distinct} rendered, the rest copies of them)")
        write_dataset(data, {"train": distinct, "val": 0, "test": 2}, seed=0, image_size=image_size, progress=False)
        fill_with_copies(data / "train", images)
        result["synth_seconds"] = round(time.monotonic() - started, 1)
        result["distinct_frames"] = distinct
    result["data"] = str(data)
    rows = sum(1 for _ in (data / "train" / "metadata.jsonl").open()) if (data / "train" / "metadata.jsonl").exists() else images
    result["images"] = rows
    try:
        for path in paths:
            need = rows * image_size * image_size * 3
            if path == "memory" and need > psutil.virtual_memory().available / 2:
                result[path] = {"skipped": f"{need / 2**30:.1f} GiB of frames exceed half the available memory"}
                continue
            progress(f"{path}: training {steps} steps")
            command = [sys.executable, "-m", "framewatch.benchmarks.training", "--child", path, "--data", str(data),
                       "--image-size", str(image_size), "--image-encoder", encoder, "--steps", str(steps), "--warmup", str(warmup),
                       "--batch-size", str(batch_size)] + (["--workers", str(workers)] if workers is not None else [])
            done = subprocess.run(command, capture_output=True, text=True, timeout=7200)
            if done.returncode != 0:
                result[path] = {"failed": done.stderr[-2000:]}
                continue
            result[path] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if scratch is not None:
            scratch.cleanup()
    streamed, memory = result.get("streamed", {}), result.get("memory", {})
    if streamed.get("images_per_second") and memory.get("images_per_second"):
        result["streamed_over_memory_speed"] = round(streamed["images_per_second"] / memory["images_per_second"], 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["streamed", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--image-encoder", default="efficientnet_lite0")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(_child(args.child, args.data, args.image_size, args.image_encoder, args.steps, args.warmup, args.batch_size, args.workers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
