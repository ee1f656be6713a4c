"""The runtime interface and backend selection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from engines.manifest import ModelManifest, load_manifest
from framewatch.logs import get_logger

Backend = Literal["auto", "onnxruntime", "tensorrt"]
log = get_logger("engines")


class EngineError(RuntimeError):
    """An engine cannot be loaded or cannot run; the message says what to do."""


@runtime_checkable
class Engine(Protocol):
    """What the worker needs from any runtime."""

    name: str
    backend: str
    max_batch: int
    input_size: tuple[int, int]  # (height, width)
    labels: list[str]
    violent_index: int

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """uint8 N×H×W×3 RGB pixels in, float32 N×C class probabilities out; any N ≥ 1."""
        ...


@dataclass(frozen=True)
class BackendChoice:
    backend: Literal["onnxruntime", "tensorrt"]
    reason: str
    ort_providers: tuple[str, ...] = ("CPUExecutionProvider",)


def select_backend(
    requested: Backend, *, trt_status: tuple[bool, str], ort_providers_available: list[str],
) -> BackendChoice:
    """Pure decision logic of ``load``: which backend, and why.

    ``trt_status`` is (usable, reason) from :func:`engines.tensorrt_backend.probe`: usable when
    TensorRT imports, a GPU is present and an engine built for this TensorRT version and GPU
    matches the artifact's ONNX hash.
    """
    trt_ok, trt_reason = trt_status
    cuda = "CUDAExecutionProvider" in ort_providers_available
    ort = BackendChoice(
        "onnxruntime",
        "",
        ("CUDAExecutionProvider", "CPUExecutionProvider") if cuda else ("CPUExecutionProvider",),
    )
    ort_device = "CUDA provider" if cuda else "CPU provider"
    if requested == "tensorrt":
        if not trt_ok:
            raise EngineError(f"backend=tensorrt was requested but cannot be used: {trt_reason}")
        return BackendChoice("tensorrt", f"requested; {trt_reason}")
    if requested == "onnxruntime":
        return BackendChoice("onnxruntime", f"requested; {ort_device}", ort.ort_providers)
    if trt_ok:
        return BackendChoice("tensorrt", f"auto: {trt_reason}")
    return BackendChoice("onnxruntime", f"auto: TensorRT not used ({trt_reason}); ONNX Runtime {ort_device}", ort.ort_providers)


def load(path: Path | str, backend: Backend = "auto", *, intra_op_threads: int = 0, verify_hash: bool = True) -> Engine:
    """Load a model artifact folder onto the best (or the requested) backend and log the choice."""
    import onnxruntime as ort

    from engines import tensorrt_backend

    artifact_dir = Path(path)
    manifest = load_manifest(artifact_dir, verify_hash=verify_hash)
    trt_status = tensorrt_backend.probe(artifact_dir, manifest) if backend != "onnxruntime" else (False, "not requested")
    choice = select_backend(backend, trt_status=trt_status, ort_providers_available=ort.get_available_providers())
    log.info("engine selected", backend=choice.backend, reason=choice.reason, model=manifest.name, artifact=str(artifact_dir))
    if choice.backend == "tensorrt":
        return tensorrt_backend.TensorRTEngine.from_artifact(artifact_dir, manifest)
    from engines.onnxrt import OnnxRuntimeEngine

    return OnnxRuntimeEngine(artifact_dir, manifest, providers=list(choice.ort_providers), intra_op_threads=intra_op_threads)


def manifest_fields(manifest: ModelManifest) -> dict[str, object]:
    """The Engine attributes every backend derives from the manifest."""
    return {
        "name": manifest.name,
        "max_batch": manifest.max_batch,
        "input_size": (manifest.input_height, manifest.input_width),
        "labels": list(manifest.labels),
        "violent_index": manifest.violent_index,
    }
