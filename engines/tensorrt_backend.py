"""TensorRT: engine builds, the engine cache, and an Engine that runs a plan.

Written against the TensorRT 10.x and 11.x Python APIs. What differs between them:

* FP16. TensorRT 10 builds FP16 from an FP32 graph with ``BuilderFlag.FP16`` (weak typing);
  TensorRT 11 removed the precision flags: networks are strongly typed, so FP16 comes from
  the FP16 ONNX graph that ``framewatch export --fp16`` writes (FP32 inputs and outputs).
* Volta. Compute capability 7.0 (V100) was dropped in TensorRT 10.5 and in CUDA 13, so a V100
  runs TensorRT 10.0–10.4 on CUDA 12; :func:`check_support` refuses other pairs.

An engine is tied to the TensorRT version and the GPU's compute capability, so the cache key
is both: ``ARTIFACT/engines/<trt-version>/sm<major><minor>/model.plan`` with ``build.json``.

Only this module imports ``tensorrt`` and ``cuda.bindings`` (cuda-python), and only inside
functions, so the rest of framewatch imports without them. The ``_Runtime`` class is the one
boundary to TensorRT and CUDA: tests replace it to check everything around it on machines
without a GPU; ``engines/gpu_check.py`` runs the real thing.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engines.api import EngineError
from engines.manifest import ModelManifest

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


def onnx_for_precision(artifact_dir: Path, manifest: ModelManifest, precision: Precision, trt_version: str) -> tuple[Path, str]:
    """The ONNX graph to build from: TensorRT 11 FP16 needs the FP16 graph."""
    if precision == "fp16" and not has_precision_flags(trt_version):
        if not manifest.onnx_fp16_file or not manifest.onnx_fp16_sha256:
            raise EngineError(
                f"TensorRT {trt_version} has no FP16 builder flag (strongly typed networks): "
                f"export the model again with `framewatch export RUN_DIR --out {artifact_dir} --fp16`, or build --precision fp32"
            )
        return artifact_dir / manifest.onnx_fp16_file, manifest.onnx_fp16_sha256
    return artifact_dir / manifest.onnx_file, manifest.onnx_sha256


def trtexec_command(
    trtexec: str, onnx_path: Path, plan_path: Path, manifest: ModelManifest, request: BuildRequest, trt_version: str,
) -> list[str]:
    """The trtexec command line equivalent to the Python API build."""
    min_s, opt_s, max_s = profile_shapes(manifest, request)

    def shape(dims: list[int]) -> str:
        return f"{manifest.input_name}:{'x'.join(str(d) for d in dims)}"

    cmd = [
        trtexec, f"--onnx={onnx_path}", f"--saveEngine={plan_path}",
        f"--minShapes={shape(min_s)}", f"--optShapes={shape(opt_s)}", f"--maxShapes={shape(max_s)}",
        f"--memPoolSize=workspace:{request.workspace_mb}M",
    ]
    if request.precision == "fp16" and has_precision_flags(trt_version):
        cmd.append("--fp16")
    if request.timing_cache is not None:
        cmd.append(f"--timingCacheFile={request.timing_cache}")
    cmd.append("--skipInference")
    return cmd


class _Runtime:
    """The only code that touches tensorrt and cuda.bindings. Tests substitute a fake."""

    def __init__(self) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise EngineError("TensorRT is not installed (pip install 'framewatch[tensorrt]')") from exc
        self.trt = trt
        self.cudart = _import_cudart()
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
    props = _cuda_ok(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    err, runtime_version = cudart.cudaRuntimeGetVersion()
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    cuda_version = (runtime_version // 1000, (runtime_version % 1000) // 10) if int(err) == 0 else None
    return GpuInfo(name.split("\x00", 1)[0], (int(props.major), int(props.minor)), cuda_version)


class PinnedBuffers:
    """Pinned host buffers, device buffers and one CUDA stream for an input and an output tensor.

    Pinned (page-locked) host memory is what makes cudaMemcpyAsync truly asynchronous. Used by
    :class:`TensorRTEngine`; engines/gpu_check.py round-trips data through it on a GPU.
    """

    def __init__(self, cudart: Any, in_bytes: int, out_bytes: int) -> None:
        self.cudart = cudart
        self.in_bytes, self.out_bytes = in_bytes, out_bytes
        self.stream = _cuda_ok(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.host_in_ptr = _cuda_ok(cudart.cudaMallocHost(in_bytes), "cudaMallocHost")
        self.host_out_ptr = _cuda_ok(cudart.cudaMallocHost(out_bytes), "cudaMallocHost")
        self.host_in = np.ctypeslib.as_array(_as_ctypes(self.host_in_ptr, in_bytes))
        self.host_out = np.ctypeslib.as_array(_as_ctypes(self.host_out_ptr, out_bytes))
        self.dev_in = _cuda_ok(cudart.cudaMalloc(in_bytes), "cudaMalloc")
        self.dev_out = _cuda_ok(cudart.cudaMalloc(out_bytes), "cudaMalloc")

    def upload(self, nbytes: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _cuda_ok(self.cudart.cudaMemcpyAsync(self.dev_in, self.host_in_ptr, nbytes, kind, self.stream), "cudaMemcpyAsync")

    def download(self, nbytes: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_ok(self.cudart.cudaMemcpyAsync(self.host_out_ptr, self.dev_out, nbytes, kind, self.stream), "cudaMemcpyAsync")

    def device_copy(self, nbytes: int) -> None:
        """dev_in → dev_out on the stream (gpu_check uses it to round-trip without TensorRT)."""
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        _cuda_ok(self.cudart.cudaMemcpyAsync(self.dev_out, self.dev_in, nbytes, kind, self.stream), "cudaMemcpyAsync")

    def synchronize(self) -> None:
        _cuda_ok(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def close(self) -> None:
        for ptr in (self.dev_in, self.dev_out):
            self.cudart.cudaFree(ptr)
        for ptr in (self.host_in_ptr, self.host_out_ptr):
            self.cudart.cudaFreeHost(ptr)
        self.cudart.cudaStreamDestroy(self.stream)


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError as exc:
            raise EngineError("cuda-python is not installed (pip install 'framewatch[tensorrt]')") from exc
    return cudart


def _cuda_ok(result: Any, what: str) -> Any:
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"{what} failed with CUDA error {int(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def build_engine(
    artifact_dir: Path, manifest: ModelManifest, request: BuildRequest, *, use_trtexec: bool = False,
    trtexec: str | None = None, runtime: _Runtime | None = None, run_command: Any = subprocess.run,
) -> tuple[Path, BuildInfo]:
    """Build ``model.plan`` for this GPU and TensorRT into the engine cache; returns its path and build info."""
    runtime = runtime or _Runtime()
    trt_version = runtime.version
    gpu = runtime.gpu()
    check_support(trt_version, gpu)
    onnx_path, onnx_sha = onnx_for_precision(artifact_dir, manifest, request.precision, trt_version)
    out_dir = engine_dir(artifact_dir, trt_version, gpu)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / PLAN_NAME
    min_s, opt_s, max_s = profile_shapes(manifest, request)
    started = time.monotonic()
    command_text = None
    if use_trtexec:
        binary = trtexec or shutil.which("trtexec")
        if binary is None:
            raise EngineError("trtexec is not on PATH (it ships in the TensorRT containers and tar packages); drop --use-trtexec to use the Python API")
        cmd = trtexec_command(binary, onnx_path, plan_path, manifest, request, trt_version)
        command_text = shlex.join(cmd)
        print(command_text)
        result = run_command(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise EngineError(f"trtexec failed ({result.returncode}): {result.stderr[-2000:] or result.stdout[-2000:]}")
    else:
        cache_bytes = request.timing_cache.read_bytes() if request.timing_cache and request.timing_cache.exists() else None
        plan, new_cache = runtime.build(onnx_path, manifest, request, cache_bytes)
        plan_path.write_bytes(plan)
        if request.timing_cache is not None and new_cache:
            request.timing_cache.write_bytes(new_cache)
    info = BuildInfo(
        tensorrt_version=trt_version, gpu_name=gpu.name,
        compute_capability=f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
        precision=request.precision, input_name=manifest.input_name,
        min_shape=min_s, opt_shape=opt_s, max_shape=max_s,
        onnx_file=onnx_path.name, onnx_sha256=onnx_sha, workspace_mb=request.workspace_mb,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), build_seconds=round(time.monotonic() - started, 2),
        builder="trtexec" if use_trtexec else "python-api", command=command_text,
    )
    (out_dir / BUILD_INFO_NAME).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return plan_path, info


def rebuild_hint(artifact_dir: Path) -> str:
    return f"rebuild it with `framewatch engine build {artifact_dir}`"


def validate_build(artifact_dir: Path, manifest: ModelManifest, info: BuildInfo, trt_version: str, gpu: GpuInfo) -> None:
    """Refuse an engine built by another TensorRT, for another GPU, or from another ONNX graph."""
    if info.tensorrt_version != trt_version:
        raise EngineError(f"engine was built with TensorRT {info.tensorrt_version}, this is {trt_version}: {rebuild_hint(artifact_dir)}")
    cc = f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"
    if info.compute_capability != cc:
        raise EngineError(f"engine was built for compute capability {info.compute_capability} ({info.gpu_name}), this GPU is {cc} ({gpu.name}): {rebuild_hint(artifact_dir)}")
    expected = {manifest.onnx_sha256, manifest.onnx_fp16_sha256} - {None}
    if info.onnx_sha256 not in expected:
        raise EngineError(f"engine was built from another ONNX graph (sha256 {info.onnx_sha256[:12]}…): {rebuild_hint(artifact_dir)}")


def read_build(path: Path) -> BuildInfo:
    return BuildInfo(**json.loads(path.read_text()))


def probe(artifact_dir: Path, manifest: ModelManifest, runtime: _Runtime | None = None) -> tuple[bool, str]:
    """Can TensorRT run this artifact here? (usable, reason) for ``engines.load``'s choice."""
    try:
        runtime = runtime or _Runtime()
        gpu = runtime.gpu()
        check_support(runtime.version, gpu)
    except EngineError as exc:
        return False, str(exc)
    folder = engine_dir(artifact_dir, runtime.version, gpu)
    if not (folder / PLAN_NAME).exists():
        return False, f"no engine for TensorRT {runtime.version} on {gpu.name} ({gpu.sm}); {rebuild_hint(artifact_dir)}"
    try:
        validate_build(artifact_dir, manifest, read_build(folder / BUILD_INFO_NAME), runtime.version, gpu)
    except (EngineError, FileNotFoundError, TypeError, json.JSONDecodeError) as exc:
        return False, str(exc)
    return True, f"TensorRT {runtime.version} engine for {gpu.name} ({gpu.sm}) matches the artifact"


class TensorRTEngine:
    """Runs a plan with execute_async_v3: named tensor addresses, pinned host buffers, one CUDA stream."""

    backend = "tensorrt"

    def __init__(self, plan_path: Path, manifest: ModelManifest, info: BuildInfo, runtime: _Runtime | None = None) -> None:
        self._rt = runtime or _Runtime()
        self.name = manifest.name
        self.labels = list(manifest.labels)
        self.violent_index = manifest.violent_index
        self.input_size = (manifest.input_height, manifest.input_width)
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
    def from_artifact(cls, artifact_dir: Path, manifest: ModelManifest, runtime: _Runtime | None = None) -> TensorRTEngine:
        runtime = runtime or _Runtime()
        gpu = runtime.gpu()
        check_support(runtime.version, gpu)
        folder = engine_dir(artifact_dir, runtime.version, gpu)
        if not (folder / PLAN_NAME).exists():
            raise EngineError(f"no TensorRT engine in {folder}: {rebuild_hint(artifact_dir)}")
        info = read_build(folder / BUILD_INFO_NAME)
        validate_build(artifact_dir, manifest, info, runtime.version, gpu)
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
