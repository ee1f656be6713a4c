"""`framewatch bench engine`: the framewatch ONNX Runtime engine against a bare
onnxruntime.InferenceSession on the same model, interleaved in one run (the wrapper's overhead)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from framewatch.engines import Engine, load
from framewatch.engines.check import reference_frames
from framewatch.engines.manifest import load_manifest
from framewatch.machine import cpu_model


def _time(fn: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_engine(artifact_dir: Path, batch_sizes: tuple[int, ...] = (1, 8, 32), rounds: int = 7, repeats: int = 20) -> dict[str, Any]:
    """Images/s of the framewatch ONNX Runtime engine and of a bare session, interleaved round by round
    so that both see the same machine noise; the ratio is the wrapper's cost."""
    manifest = load_manifest(artifact_dir)
    engine: Engine = load(artifact_dir, "onnxruntime")
    bare = ort.InferenceSession(str(artifact_dir / manifest.onnx_file), providers=["CPUExecutionProvider"])
    if manifest.reference is not None:
        frames, _ = reference_frames(artifact_dir, manifest)
        images = np.resize(frames, (max(batch_sizes), *frames.shape[1:]))
        source = f"the artifact's {len(frames)} reference frames, repeated to the batch"
    else:  # an artifact from before reference frames: speed does not depend on the pixels
        images = np.random.default_rng(0).integers(0, 256, (max(batch_sizes), manifest.input_height, manifest.input_width, 3), np.uint8)
        source = "random pixels (the artifact has no reference frames)"
    results = {}
    for batch in batch_sizes:
        chunk = np.ascontiguousarray(images[:batch])
        feed = {manifest.input_name: chunk}
        outputs = [manifest.output_name]

        def run_ours(chunk: np.ndarray = chunk) -> object:
            return engine.infer(chunk)

        def run_bare(feed: dict[str, np.ndarray] = feed, outputs: list[str] = outputs) -> object:
            return bare.run(outputs, feed)

        for fn in (run_ours, run_bare):
            fn()
            fn()
        ours_rounds, bare_rounds = [], []
        for _ in range(rounds):
            ours_rounds.append(batch / _time(run_ours, repeats))
            bare_rounds.append(batch / _time(run_bare, repeats))
        ours_ips, bare_ips = statistics.median(ours_rounds), statistics.median(bare_rounds)
        results[str(batch)] = {"framewatch_images_per_second": ours_ips, "bare_session_images_per_second": bare_ips,
                               "ratio": ours_ips / bare_ips, "overhead_percent": (1 - ours_ips / bare_ips) * 100}
    return {"artifact": str(artifact_dir), "model": manifest.name, "input": [manifest.input_height, manifest.input_width],
            "images": source, "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                                          "onnxruntime": ort.__version__},
            "rounds": rounds, "repeats_per_round": repeats, "batches": results}
