"""TensorRT for framewatch, the parts both sides share: versions and the GPU support matrix,
the engine cache's layout and build record, and the one boundary to TensorRT and CUDA.

Written against the TensorRT 10.x and 11.x Python APIs. What differs between them:

* FP16. TensorRT 10 builds FP16 from an FP32 graph with ``BuilderFlag.FP16`` (weak typing);
  TensorRT 11 removed the precision flags: networks are strongly typed, so FP16 comes from
  the FP16 ONNX graph that ``framewatch export --fp16`` writes (FP32 inputs and outputs).
* Volta. Compute capability 7.0 (V100) was dropped in TensorRT 10.5 and in CUDA 13, so a V100
  runs TensorRT 10.0–10.4 on CUDA 12; :func:`check_support` refuses other pairs.

An engine is tied to the TensorRT version and the GPU's compute capability, so the cache key
is both: ``ARTIFACT/engines/<trt-version>/sm<major><minor>/model.plan`` with ``build.json``.
Building plans is :mod:`framewatch.engines.tensorrt_build`; running them is
:mod:`framewatch.engines.tensorrt_runtime`.

``tensorrt`` and ``cuda.bindings`` (cuda-python) are imported only inside functions here, so the
rest of framewatch imports without them. :class:`TensorRTLibrary` is the one boundary to TensorRT
and CUDA: tests replace it to check everything around it on machines without a GPU;
``benchmarks/gpu_check.py`` runs the real thing.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from framewatch.engines.base import EngineError
from framewatch.engines.manifest import ModelManifest

Precision = Literal["fp16", "fp32"]
PLAN_NAME = "model.plan"
BUILD_INFO_NAME = "build.json"
# The first TensorRT release without Volta (sm70) support.
VOLTA_LAST_SUPPORTED = (10, 4)


def parse_version(version: str) -> tuple[int, int, int]:
    parts = [int("".join(ch for ch in piece if ch.isdigit()) or 0) for piece in version.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]
    cuda_runtime_version: tuple[int, int] | None = None

    @property
    def sm(self) -> str:
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


def check_support(trt_version: str, gpu: GpuInfo) -> None:
    """Refuse GPU/TensorRT/CUDA combinations that NVIDIA does not support, saying what would work."""
    major, minor, _ = parse_version(trt_version)
    if major < 10:
        raise EngineError(f"TensorRT {trt_version} is too old: framewatch needs TensorRT 10.0 or newer (named tensors, execute_async_v3)")
    cc = gpu.compute_capability
    if cc < (7, 0):
        raise EngineError(f"{gpu.name} (compute capability {cc[0]}.{cc[1]}) is not supported by TensorRT 10 or 11")
    if cc == (7, 0):
        if (major, minor) > VOLTA_LAST_SUPPORTED:
            raise EngineError(
                f"{gpu.name} is a Volta GPU (compute capability 7.0): TensorRT removed Volta in 10.5, "
                f"and this is TensorRT {trt_version}. Install TensorRT 10.0–10.4 on CUDA 12 (see docs/deployment.md)."
            )
        if gpu.cuda_runtime_version is not None and gpu.cuda_runtime_version[0] >= 13:
            raise EngineError(f"{gpu.name} (Volta) is not supported by CUDA {gpu.cuda_runtime_version[0]}: use CUDA 12 with TensorRT 10.0–10.4")


def has_precision_flags(trt_version: str) -> bool:
    """TensorRT 10 has BuilderFlag.FP16; TensorRT 11 builds strongly typed networks only."""
    return parse_version(trt_version)[0] < 11


def engine_dir(artifact_dir: Path, trt_version: str, gpu: GpuInfo) -> Path:
    return artifact_dir / "engines" / trt_version / gpu.sm


@dataclass
class BuildInfo:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"
    precision: Precision
    input_name: str
    min_shape: list[int]
    opt_shape: list[int]
    max_shape: list[int]
    onnx_file: str
    onnx_sha256: str
    workspace_mb: int
    built_at: str
    build_seconds: float
    builder: Literal["python-api", "trtexec"]
    command: str | None = None
    host: str = field(default_factory=platform.node)


@dataclass(frozen=True)
class BuildRequest:
    max_batch: int = 64
    opt_batch: int = 32
    precision: Precision = "fp16"
    workspace_mb: int = 2048
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.opt_batch <= self.max_batch:
            raise EngineError(f"--opt-batch {self.opt_batch} must lie in 1..--max-batch {self.max_batch}")


def profile_shapes(manifest: ModelManifest, request: BuildRequest) -> tuple[list[int], list[int], list[int]]:
    tail = [manifest.input_height, manifest.input_width, 3]
    return [1, *tail], [request.opt_batch, *tail], [request.max_batch, *tail]


def rebuild_hint(artifact_dir: Path) -> str:
    return f"rebuild it with `framewatch engine build {artifact_dir}`"


class TensorRTLibrary:
    """The only code that touches tensorrt and cuda.bindings. Tests substitute a fake."""

    def __init__(self) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise EngineError("TensorRT is not installed (pip install 'framewatch[tensorrt]')") from exc
        self.trt = trt
        self.cudart = import_cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    def gpu(self, device: int = 0) -> GpuInfo:
        return query_gpu(self.cudart, device)

    def build(
        self, onnx_path: Path, manifest: ModelManifest, request: BuildRequest, timing_cache: bytes | None,
    ) -> tuple[bytes, bytes | None]:
        trt = self.trt
        builder = trt.Builder(self.logger)
        flags = 0
        if not has_precision_flags(self.version):
            # 11.x networks are strongly typed whatever the flags; name it where the enum still has it.
            strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
            flags = 1 << int(strongly) if strongly is not None else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mb * (1 << 20))
        if request.precision == "fp16" and has_precision_flags(self.version):
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        min_s, opt_s, max_s = profile_shapes(manifest, request)
        profile.set_shape(manifest.input_name, tuple(min_s), tuple(opt_s), tuple(max_s))
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(timing_cache or b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError("TensorRT failed to build the engine; rerun with TRT logs at VERBOSE for the reason")
        new_cache = config.get_timing_cache()
        return bytes(memoryview(plan)), (bytes(memoryview(new_cache.serialize())) if new_cache is not None else None)

    def deserialize(self, plan: bytes) -> Any:
        runtime = self.trt.Runtime(self.logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError("TensorRT could not deserialize the plan (built by another TensorRT version or for another GPU?)")
        return engine


def query_gpu(cudart: Any, device: int = 0) -> GpuInfo:
    """Name, compute capability and CUDA runtime version of one GPU, through cuda.bindings."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise EngineError("no CUDA GPU is visible")
    props = cuda_ok(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    err, runtime_version = cudart.cudaRuntimeGetVersion()
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    cuda_version = (runtime_version // 1000, (runtime_version % 1000) // 10) if int(err) == 0 else None
    return GpuInfo(name.split("\x00", 1)[0], (int(props.major), int(props.minor)), cuda_version)


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError as exc:
            raise EngineError("cuda-python is not installed (pip install 'framewatch[tensorrt]')") from exc
    return cudart


def cuda_ok(result: Any, what: str) -> Any:
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"{what} failed with CUDA error {int(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


