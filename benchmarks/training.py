"""``framewatch bench train``: memory and speed of the training data paths, streamed and in memory.

    framewatch bench train --images 50000 --image-size 224 --json train_bench.json

Writes a synthetic set of ``--images`` frames (or takes ``--data``), then runs each path in its
own process (so one path's memory never counts against the other's): the training process
loads the split, builds the loader (the in-memory path decodes every frame first, with the same
loader processes), and trains ``--steps`` steps of the image classifier. Per path:

* ``first_step_seconds``: from the process's start (imports included) to the end of the first step;
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
    import psutil
    import torch

    from framewatch.training.data import load_dataset
    from framewatch.training.loader import SplitLoader, batch_indices, flip_batch, plan_loader
    from framewatch.training.models import ImageClassifier, build_image_encoder
    from framewatch.training.models.encoders import image_data_config
    from framewatch.training.preprocess import Preprocess

    split = load_dataset(data, image_size, splits=("train",), needs_text=False, max_bad_fraction=1.0)["train"]
    plan = plan_loader([split], path, cache_mb=1 << 30, workers=workers)  # type: ignore[arg-type]
    loader = SplitLoader(split, plan)
    loaded = time.monotonic()
    network = build_image_encoder(encoder, pretrained=False)
    config = image_data_config(network)
    model = ImageClassifier(network, 2)
    preprocess = Preprocess(config["mean"], config["std"])  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.from_numpy(split.labels)
    generator = torch.Generator().manual_seed(0)
    order = batch_indices(len(split), batch_size, True, generator)[:steps]
    me = psutil.Process()
    loader_rss = 0.0
    stamps: list[float] = []
    first_step = None
    model.train()
    for rows, pixels in loader(order):
        logits = model(preprocess(flip_batch(pixels, generator)))
        loss = torch.nn.functional.cross_entropy(logits, labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stamps.append(time.monotonic())
        if first_step is None:
            first_step = stamps[-1] - PROCESS_START
        loader_rss = max(loader_rss, sum(c.memory_info().rss for c in me.children(recursive=True)) / 2**20)
    loader.close()
    measured = stamps[warmup:]
    rate = (len(measured) - 1) * batch_size / (measured[-1] - measured[0]) if len(measured) > 1 else None
    return {"path": path, "images": len(split), "steps": len(stamps), "batch_size": batch_size, "loader_workers": plan.workers,
            "first_step_seconds": round(first_step or 0.0, 2), "load_seconds": round(loaded - PROCESS_START, 2),
            "images_per_second": round(rate, 2) if rate else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "loader_rss_mb": round(loader_rss, 1)}


def bench_train(images: int, image_size: int, encoder: str = "efficientnet_lite0", data: Path | None = None, steps: int = 30,
                warmup: int = 5, batch_size: int = 32, workers: int | None = None, paths: tuple[str, ...] = ("streamed", "memory"),
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
        progress(f"writing {images} synthetic {image_size}px frames to {data}")
        write_dataset(data, {"train": images, "val": 0, "test": 2}, seed=0, image_size=image_size, progress=False)
        result["synth_seconds"] = round(time.monotonic() - started, 1)
    result["data"] = str(data)
    try:
        for path in paths:
            need = images * image_size * image_size * 3
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
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(_child(args.child, args.data, args.image_size, args.image_encoder, args.steps, args.warmup, args.batch_size, args.workers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
