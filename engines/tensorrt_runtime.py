"""Running a TensorRT plan: the engine cache's plan for this TensorRT and GPU, checked against the
artifact, executed with ``execute_async_v3`` on pinned buffers and one CUDA stream. Registers the
``tensorrt`` backend (preferred over ONNX Runtime when a matching plan exists)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from framewatch.engines.base import EngineError, EngineOptions, engine_fields, register_backend
from framewatch.engines.manifest import ModelManifest
from framewatch.engines.tensorrt_platform import (
    BUILD_INFO_NAME,
    PLAN_NAME,
    BuildInfo,
    GpuInfo,
    TensorRTLibrary,
    check_support,
    cuda_ok,
    engine_dir,
    rebuild_hint,
    same_release,
)
from framewatch.logs import get_logger

log = get_logger(__name__)


class PinnedBuffers:
    """Pinned host buffers, device buffers and one CUDA stream for an input and an output tensor.

    Pinned (page-locked) host memory is what makes cudaMemcpyAsync truly asynchronous. Used by
    :class:`TensorRTEngine`; benchmarks/gpu_check.py round-trips data through it on a GPU.
    """

    def __init__(self, cudart: Any, in_bytes: int, out_bytes: int) -> None:
        self.cudart = cudart
        self.in_bytes, self.out_bytes = in_bytes, out_bytes
        self.stream = cuda_ok(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.host_in_ptr = cuda_ok(cudart.cudaMallocHost(in_bytes), "cudaMallocHost")
        self.host_out_ptr = cuda_ok(cudart.cudaMallocHost(out_bytes), "cudaMallocHost")
        self.host_in = np.ctypeslib.as_array(_as_ctypes(self.host_in_ptr, in_bytes))
        self.host_out = np.ctypeslib.as_array(_as_ctypes(self.host_out_ptr, out_bytes))
        self.dev_in = cuda_ok(cudart.cudaMalloc(in_bytes), "cudaMalloc")
        self.dev_out = cuda_ok(cudart.cudaMalloc(out_bytes), "cudaMalloc")

    def upload(self, nbytes: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_ok(self.cudart.cudaMemcpyAsync(self.dev_in, self.host_in_ptr, nbytes, kind, self.stream), "cudaMemcpyAsync")

    def download(self, nbytes: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_ok(self.cudart.cudaMemcpyAsync(self.host_out_ptr, self.dev_out, nbytes, kind, self.stream), "cudaMemcpyAsync")

    def device_copy(self, nbytes: int) -> None:
        """dev_in → dev_out on the stream (gpu_check uses it to round-trip without TensorRT)."""
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        cuda_ok(self.cudart.cudaMemcpyAsync(self.dev_out, self.dev_in, nbytes, kind, self.stream), "cudaMemcpyAsync")

    def synchronize(self) -> None:
        cuda_ok(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def close(self) -> None:
        for ptr in (self.dev_in, self.dev_out):
            self.cudart.cudaFree(ptr)
        for ptr in (self.host_in_ptr, self.host_out_ptr):
            self.cudart.cudaFreeHost(ptr)
        self.cudart.cudaStreamDestroy(self.stream)


def validate_build(artifact_dir: Path, manifest: ModelManifest, info: BuildInfo, trt_version: str, gpu: GpuInfo) -> None:
    """Refuse an engine built by another TensorRT, for another GPU, or from another ONNX graph."""
    if not same_release(info.tensorrt_version, trt_version):
        raise EngineError(f"engine was built with TensorRT {info.tensorrt_version}, this is {trt_version}: {rebuild_hint(artifact_dir)}")
    cc = f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"
    if info.compute_capability != cc:
        raise EngineError(f"engine was built for compute capability {info.compute_capability} ({info.gpu_name}), this GPU is {cc} ({gpu.name}): {rebuild_hint(artifact_dir)}")
    expected = {manifest.onnx_sha256, manifest.onnx_fp16_sha256} - {None}
    if info.onnx_sha256 not in expected:
        raise EngineError(f"engine was built from another ONNX graph (sha256 {info.onnx_sha256[:12]}…): {rebuild_hint(artifact_dir)}")


def read_build(path: Path) -> BuildInfo:
    return BuildInfo(**json.loads(path.read_text()))


def provenance_note(info: BuildInfo, gpu: GpuInfo) -> str | None:
    """Says when a plan that passes :func:`validate_build` was built elsewhere: for another GPU
    model of the same compute capability (TensorRT tunes plans for the model it built on: they
    load, but may run slower), or under another driver."""
    notes = []
    # Not the host name: in docker/compose.yaml the build and the worker are two containers.
    if info.gpu_name != gpu.name:
        notes.append(f"for a {info.gpu_name} (this is a {gpu.name}; same compute capability, tuned for the other model)")
    if info.driver_release and gpu.driver_release and info.driver_release != gpu.driver_release:
        notes.append(f"under driver {info.driver_release} (this is {gpu.driver_release})")
    return f"engine built {', '.join(notes)} with {info.builder} TensorRT {info.tensorrt_version}" if notes else None


def probe(artifact_dir: Path, manifest: ModelManifest, runtime: TensorRTLibrary | None = None) -> tuple[bool, str]:
    """Can TensorRT run this artifact here? (usable, reason) for ``engines.load``'s choice; never raises."""
    try:
        runtime = runtime or TensorRTLibrary()
        gpu = runtime.gpu()
        check_support(runtime.version, gpu)
    except EngineError as exc:
        return False, str(exc)
    folder = engine_dir(artifact_dir, runtime.version, gpu)
    if not (folder / PLAN_NAME).exists():
        return False, f"no engine for TensorRT {runtime.version} on {gpu.name} ({gpu.sm}); {rebuild_hint(artifact_dir)}"
    try:
        info = read_build(folder / BUILD_INFO_NAME)
        validate_build(artifact_dir, manifest, info, runtime.version, gpu)
    except (EngineError, FileNotFoundError, TypeError, json.JSONDecodeError) as exc:
        return False, str(exc)
    note = provenance_note(info, gpu)
    return True, f"TensorRT {runtime.version} engine for {gpu.name} ({gpu.sm}) matches the artifact" + (f"; {note}" if note else "")


class TensorRTEngine:
    """Runs a plan with execute_async_v3: named tensor addresses, pinned host buffers, one CUDA stream."""

    backend = "tensorrt"

    def __init__(self, plan_path: Path, manifest: ModelManifest, info: BuildInfo, runtime: TensorRTLibrary | None = None) -> None:
        self._rt = runtime or TensorRTLibrary()
        fields = engine_fields(manifest)
        self.name: str = fields["name"]
        self.labels: list[str] = fields["labels"]
        self.violent_index: int = fields["violent_index"]
        self.input_size: tuple[int, int] = fields["input_size"]
        self.interpolation: str = fields["interpolation"]
        self.max_batch = info.max_shape[0]
        self.precision = info.precision
        self._input = manifest.input_name
        self._output = manifest.output_name
        self._engine = self._rt.deserialize(plan_path.read_bytes())
        self._context = self._engine.create_execution_context()
        classes = len(self.labels)
        h, w = self.input_size
        self._buffers = PinnedBuffers(self._rt.cudart, self.max_batch * h * w * 3, self.max_batch * classes * 4)
        self._host_in = self._buffers.host_in
        self._host_out = self._buffers.host_out.view(np.float32)
        self._context.set_tensor_address(self._input, int(self._buffers.dev_in))
        self._context.set_tensor_address(self._output, int(self._buffers.dev_out))
        self._classes = classes

    @classmethod
    def from_artifact(cls, artifact_dir: Path, manifest: ModelManifest, runtime: TensorRTLibrary | None = None) -> TensorRTEngine:
        runtime = runtime or TensorRTLibrary()
        gpu = runtime.gpu()
        check_support(runtime.version, gpu)
        folder = engine_dir(artifact_dir, runtime.version, gpu)
        if not (folder / PLAN_NAME).exists():
            raise EngineError(f"no TensorRT engine in {folder}: {rebuild_hint(artifact_dir)}")
        info = read_build(folder / BUILD_INFO_NAME)
        validate_build(artifact_dir, manifest, info, runtime.version, gpu)
        note = provenance_note(info, gpu)
        if note:
            log.warning("tensorrt engine built elsewhere", detail=note, plan=str(folder / PLAN_NAME))
        return cls(folder / PLAN_NAME, manifest, info, runtime)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:3] != self.input_size:
            raise ValueError(f"expected uint8 N×{self.input_size[0]}×{self.input_size[1]}×3, got {batch.dtype} {batch.shape}")
        results = [self._infer_chunk(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return results[0] if len(results) == 1 else np.concatenate(results)

    def _infer_chunk(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        self._host_in[: chunk.nbytes] = chunk.reshape(-1)
        self._context.set_input_shape(self._input, chunk.shape)
        self._buffers.upload(chunk.nbytes)
        if not self._context.execute_async_v3(self._buffers.stream_handle):
            raise EngineError("TensorRT execute_async_v3 failed")
        self._buffers.download(n * self._classes * 4)
        self._buffers.synchronize()
        return self._host_out[: n * self._classes].reshape(n, self._classes).copy()

    def close(self) -> None:
        self._buffers.close()


def _as_ctypes(ptr: int, nbytes: int) -> Any:
    import ctypes

    return (ctypes.c_ubyte * nbytes).from_address(int(ptr))


def _create(artifact_dir: Path, manifest: ModelManifest, options: EngineOptions) -> TensorRTEngine:
    return TensorRTEngine.from_artifact(artifact_dir, manifest)


register_backend("tensorrt", priority=100, probe=probe, create=_create)
