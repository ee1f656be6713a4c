"""Engine checks and benchmarks: parity with ONNX Runtime on the CPU, throughput by batch size,
and the framewatch wrapper's overhead against a bare onnxruntime.InferenceSession."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engines.api import Backend, Engine, load
from engines.manifest import ModelManifest, load_manifest


def imagefolder_frames(root: Path, height: int, width: int, count: int) -> list[np.ndarray]:
    """Up to ``count`` RGB frames of an imagefolder data set (test split first), resized bilinearly
    as training resizes them. Unreadable rows are skipped."""
    from PIL import Image

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


def sample_images(artifact_dir: Path, manifest: ModelManifest, count: int = 64) -> tuple[np.ndarray, str]:
    """Frames of the training data set named in the manifest; random pixels if it is gone."""
    h, w = manifest.input_height, manifest.input_width
    root = Path(str(manifest.training.get("data", "")))
    images = imagefolder_frames(root, h, w, count)
    if images:
        while len(images) < count:
            images.extend(images[: count - len(images)])
        return np.stack(images), f"{len(images)} frames of {root}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, h, w, 3), dtype=np.uint8), "random pixels (the training data set is not reachable)"


def reference_probs(artifact_dir: Path, manifest: ModelManifest, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(artifact_dir / manifest.onnx_file), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([manifest.output_name], {manifest.input_name: images})[0], dtype=np.float32)


def _time(fn: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def check_engine(artifact_dir: Path, backend: Backend = "auto", batch_sizes: tuple[int, ...] = (1, 8, 32), repeats: int = 10) -> dict[str, Any]:
    manifest = load_manifest(artifact_dir)
    engine = load(artifact_dir, backend)
    images, source = sample_images(artifact_dir, manifest, max((*batch_sizes, 32)))
    reference = reference_probs(artifact_dir, manifest, images)
    ours = engine.infer(images)
    diff = float(np.abs(ours - reference).max())
    throughput = {}
    for batch in batch_sizes:
        chunk = images[:batch]
        engine.infer(chunk)
        throughput[str(batch)] = batch / _time(lambda chunk=chunk: engine.infer(chunk), repeats)  # type: ignore[misc]
    return {"artifact": str(artifact_dir), "backend": engine.backend, "images": source, "max_abs_diff_vs_onnxruntime_cpu": diff,
            "agreement_at_threshold": float(np.mean((ours[:, manifest.violent_index] >= manifest.threshold)
                                                    == (reference[:, manifest.violent_index] >= manifest.threshold))),
            "images_per_second": throughput}


def bench_engine(artifact_dir: Path, batch_sizes: tuple[int, ...] = (1, 8, 32), rounds: int = 7, repeats: int = 20) -> dict[str, Any]:
    """Images/s of the framewatch ONNX Runtime engine and of a bare session, interleaved round by round
    so that both see the same machine noise; the ratio is the wrapper's cost."""
    manifest = load_manifest(artifact_dir)
    engine: Engine = load(artifact_dir, "onnxruntime")
    bare = ort.InferenceSession(str(artifact_dir / manifest.onnx_file), providers=["CPUExecutionProvider"])
    images, source = sample_images(artifact_dir, manifest, max(batch_sizes))
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
            "images": source, "machine": {"cores": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version(),
                                          "onnxruntime": ort.__version__},
            "rounds": rounds, "repeats_per_round": repeats, "batches": results}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
