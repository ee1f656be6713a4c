"""`framewatch engine check`: does this backend, here, compute what the trained model computed?

The artifact carries its own reference frames and the probabilities PyTorch gave them at export
(model.json ``reference``), so the check needs nothing outside the artifact folder."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from framewatch.engines.manifest import ManifestError, ModelManifest, load_manifest, sha256_file
from framewatch.engines.registry import load


def reference_frames(artifact_dir: Path, manifest: ModelManifest) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×H×W×3 frames, float32 N×C expected probabilities) stored in the artifact."""
    if manifest.reference is None:
        raise ManifestError(f"{artifact_dir} has no reference frames (exported by an older framewatch): export it again")
    path = artifact_dir / manifest.reference.file
    if not path.exists():
        raise ManifestError(f"{path} named by model.json is missing")
    if sha256_file(path) != manifest.reference.sha256:
        raise ManifestError(f"{path} does not match its sha256 in model.json: the artifact was modified after export; export it again")
    with np.load(path, allow_pickle=False) as data:
        frames, probabilities = np.asarray(data["frames"], dtype=np.uint8), np.asarray(data["probabilities"], dtype=np.float32)
    if frames.shape[1:] != (manifest.input_height, manifest.input_width, 3) or len(probabilities) != len(frames):
        raise ManifestError(f"{artifact_dir / manifest.reference.file} does not match model.json (frames {frames.shape})")
    return frames, probabilities


def check_engine(artifact_dir: Path, backend: str = "auto", batch_sizes: tuple[int, ...] = (1, 8, 32), repeats: int = 10) -> dict[str, Any]:
    """Max |Δp| against the reference probabilities, agreement at the threshold, and images/s by batch."""
    manifest = load_manifest(artifact_dir)
    frames, expected = reference_frames(artifact_dir, manifest)
    engine = load(artifact_dir, backend)
    ours = engine.infer(frames)
    v, threshold = manifest.violent_index, manifest.threshold
    throughput = {}
    for batch in batch_sizes:
        chunk = np.ascontiguousarray(np.resize(frames, (batch, *frames.shape[1:])))  # the references repeated to the batch
        engine.infer(chunk)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            engine.infer(chunk)
            samples.append(time.perf_counter() - start)
        throughput[str(batch)] = batch / statistics.median(samples)
    return {"artifact": str(artifact_dir), "backend": engine.backend, "reference_frames": len(frames),
            "max_abs_diff_vs_reference": float(np.abs(ours - expected).max()),
            "export_tolerance": manifest.reference.tolerance if manifest.reference else None,
            "agreement_at_threshold": float(np.mean((ours[:, v] >= threshold) == (expected[:, v] >= threshold))),
            "images_per_second": throughput}
