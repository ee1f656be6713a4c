"""TensorRT for framewatch, the parts both sides share: versions and the GPU support matrix,
the engine cache's layout and build record, and the one boundary to TensorRT and CUDA.

Written against the TensorRT 10.x and 11.x Python APIs. What differs between them:

* FP16. TensorRT 10 builds FP16 from an FP32 graph with ``BuilderFlag.FP16`` (weak typing);
  TensorRT 11 removed the precision flags: networks are strongly typed, so FP16 comes from
  the FP16 ONNX graph that ``framewatch export --fp16`` writes (FP32 inputs and outputs).
* Volta. Compute capability 7.0 (V100) was dropped in TensorRT 10.5 and in CUDA 13, so a V100
  runs TensorRT 10.0–10.4 on CUDA 12; :func:`check_support` refuses other pairs. The CUDA version
  it judges is the runtime library's (``libcudart``, :func:`cuda_runtime_version`), not
  ``cuda.bindings``' ``cudaRuntimeGetVersion``: that one returns the CUDA version cuda-python was
  built against (13050 on a machine whose runtime said 13000), which would refuse a V100 on
  TensorRT 10.4 / CUDA 12 whenever cuda-python 13 is installed.
* TF32. TensorRT allows TF32 for FP32 layers by default on Ampere and newer (``BuilderFlag.TF32``,
  in 10 and 11 alike), which rounds inner products to 10-bit mantissas; FP32 builds clear it
  (``--noTF32`` for trtexec) so that an FP32 engine is held to the FP32 graph's tolerance.

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

import ctypes
import glob
import importlib.metadata
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from framewatch.engines.base import EngineError
from framewatch.engines.manifest import ModelManifest
from framewatch.logs import get_logger

Precision = Literal["fp16", "fp32"]
PLAN_NAME = "model.plan"
BUILD_INFO_NAME = "build.json"
# The first TensorRT release without Volta (sm70) support.
VOLTA_LAST_SUPPORTED = (10, 4)
# Set to a libcudart path to name the CUDA runtime explicitly (checked first).
CUDART_ENV = "FRAMEWATCH_CUDART"

log = get_logger(__name__)


def parse_version(version: str) -> tuple[int, int, int]:
    parts = [int("".join(ch for ch in piece if ch.isdigit()) or 0) for piece in version.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]
    cuda_runtime_version: tuple[int, int] | None = None  # libcudart's, see cuda_runtime_version()
    cuda_runtime_source: str = ""  # the library it was read from, or why it is unknown
    driver_cuda_version: tuple[int, int] | None = None  # the newest CUDA the driver supports
    driver_release: str | None = None  # e.g. "550.54.15", from /proc/driver/nvidia/version

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


def same_release(a: str, b: str) -> bool:
    """Same major.minor.patch (trtexec prints three parts, the wheel four: 10.3.0 vs 10.3.0.26)."""
    return a.split(".")[:3] == b.split(".")[:3]


def has_precision_flags(trt_version: str) -> bool:
    """TensorRT 10 has BuilderFlag.FP16; TensorRT 11 builds strongly typed networks only."""
    return parse_version(trt_version)[0] < 11


def engine_dir(artifact_dir: Path, trt_version: str, gpu: GpuInfo) -> Path:
    return artifact_dir / "engines" / trt_version / gpu.sm


@dataclass
class BuildInfo:
    """``build.json``: what a plan was built from, by what and where (the provenance of a cached plan).

    ``tensorrt_version`` is the *builder's* version (the Python API's, or the one ``trtexec``
    printed, accepted only when it is the Python ``tensorrt``'s release); the cache folder is
    named after the Python ``tensorrt`` version that runs it. Fields after ``command`` were added
    later and read as unknown from older files."""

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
    cuda_runtime: str | None = None  # "12.6"
    cuda_runtime_source: str | None = None
    driver_cuda_version: str | None = None
    driver_release: str | None = None
    cuda_python: str | None = None
    tf32: bool | None = None  # False: FP32 layers kept at FP32 (TF32 cleared); None: unknown
    timing_cache: str | None = None  # where the timing cache came from and what happened to it


@dataclass(frozen=True)
class BuildRequest:
    max_batch: int = 64
    opt_batch: int = 32
    precision: Precision = "fp16"
    workspace_mb: int = 2048
    timing_cache: Path | None = None  # a folder: one cache file per TensorRT version and GPU model

    def __post_init__(self) -> None:
        if not 1 <= self.opt_batch <= self.max_batch:
            raise EngineError(f"--opt-batch {self.opt_batch} must lie in 1..--max-batch {self.max_batch}")


def profile_shapes(manifest: ModelManifest, request: BuildRequest) -> tuple[list[int], list[int], list[int]]:
    tail = [manifest.input_height, manifest.input_width, 3]
    return [1, *tail], [request.opt_batch, *tail], [request.max_batch, *tail]


def rebuild_hint(artifact_dir: Path) -> str:
    return f"rebuild it with `framewatch engine build {artifact_dir}`"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def timing_cache_file(folder: Path, trt_version: str, gpu: GpuInfo) -> Path:
    """The timing cache for this TensorRT version and GPU model inside ``folder``.

    TensorRT rejects a cache recorded on another GPU model or version; one file per pair means
    a shared cache folder (a volume used by several machines) never feeds one GPU another's."""
    if folder.is_file():
        raise EngineError(f"--timing-cache {folder} is a file; it names a folder of caches (one per TensorRT version and GPU)")
    return folder / f"timing-trt{trt_version}-{gpu.sm}-{_slug(gpu.name)}.cache"


@dataclass
class BuildOutput:
    plan: bytes
    timing_cache: bytes | None
    timing_cache_status: str  # "none", "new", "reused", "rejected: …", "unreadable: …"
    tf32: bool | None  # whether FP32 layers may use TF32 (None: unknown)


def configure_tf32(trt: Any, config: Any, precision: Precision) -> bool | None:
    """Clear TF32 for FP32 builds; returns whether TF32 stays allowed (None where unknown)."""
    flag = getattr(trt.BuilderFlag, "TF32", None)
    if precision != "fp32":
        return None if flag is None else bool(config.get_flag(flag))
    if flag is None:
        log.warning("this TensorRT has no BuilderFlag.TF32: on Ampere and newer its FP32 layers may run in TF32")
        return None
    config.clear_flag(flag)
    return False


def attach_timing_cache(config: Any, cached: bytes | None) -> tuple[Any, str]:
    """A timing cache for ``config`` from ``cached`` bytes, never failing the build because of it.

    ``create_timing_cache`` returns None for bytes it cannot read (a corrupt or truncated
    file) and ``set_timing_cache`` returns False for a cache of another GPU or TensorRT
    version; both fall back to a fresh cache, say so in the log and in ``build.json``."""
    status = "new" if not cached else "reused"
    cache = config.create_timing_cache(cached or b"")
    if cache is None and cached:
        status = f"unreadable: {len(cached)} bytes TensorRT could not read (corrupt?); a new cache was started"
        log.warning("timing cache is unreadable; building with a new one", bytes=len(cached))
        cache = config.create_timing_cache(b"")
    if cache is None:
        raise EngineError("TensorRT could not create an empty timing cache")
    if not config.set_timing_cache(cache, False):
        if not cached:
            raise EngineError("TensorRT refused an empty timing cache")
        status = "rejected: recorded on another GPU or TensorRT version; a new cache was started"
        log.warning("timing cache rejected by TensorRT (another GPU or version); building with a new one")
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, False):
            raise EngineError("TensorRT refused an empty timing cache")
    return cache, status


class TensorRTLibrary:
    """The only code that touches tensorrt and cuda.bindings. Tests substitute a fake."""

    def __init__(self, trt: Any = None, cudart: Any = None, runtime_version: tuple[tuple[int, int] | None, str] | None = None) -> None:
        if trt is None:
            try:
                import tensorrt
            except ImportError as exc:
                raise EngineError("TensorRT is not installed (see docs/deployment.md for the extra that fits your GPU)") from exc
            trt = tensorrt
        self.trt = trt
        self.cudart = cudart if cudart is not None else import_cudart()
        self._runtime_version = runtime_version
        self.logger = trt.Logger(trt.Logger.WARNING)

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    def gpu(self, device: int = 0) -> GpuInfo:
        if self._runtime_version is None:
            self._runtime_version = cuda_runtime_version(tensorrt_cuda_major())
        return query_gpu(self.cudart, device, self._runtime_version)

    def build(
        self, onnx_path: Path, manifest: ModelManifest, request: BuildRequest, timing_cache: bytes | None,
    ) -> BuildOutput:
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
        tf32 = configure_tf32(trt, config, request.precision)
        profile = builder.create_optimization_profile()
        min_s, opt_s, max_s = profile_shapes(manifest, request)
        profile.set_shape(manifest.input_name, tuple(min_s), tuple(opt_s), tuple(max_s))
        config.add_optimization_profile(profile)
        _, cache_status = attach_timing_cache(config, timing_cache)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError("TensorRT failed to build the engine; rerun with TRT logs at VERBOSE for the reason")
        new_cache = config.get_timing_cache()
        cache_bytes = bytes(memoryview(new_cache.serialize())) if new_cache is not None else None
        return BuildOutput(bytes(memoryview(plan)), cache_bytes, cache_status, tf32)

    def deserialize(self, plan: bytes) -> Any:
        runtime = self.trt.Runtime(self.logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError("TensorRT could not deserialize the plan (built by another TensorRT version or for another GPU?)")
        return engine


def _cuda_version(number: int) -> tuple[int, int]:
    return number // 1000, (number % 1000) // 10


def query_gpu(cudart: Any, device: int = 0, runtime: tuple[tuple[int, int] | None, str] | None = None) -> GpuInfo:
    """Name and compute capability of one GPU (cuda.bindings), the CUDA runtime version of
    :func:`cuda_runtime_version` (never ``cudart.cudaRuntimeGetVersion``: that is cuda-python's
    build version) and the driver's CUDA version and release."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise EngineError("no CUDA GPU is visible")
    props = cuda_ok(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    runtime_version, source = runtime if runtime is not None else cuda_runtime_version(tensorrt_cuda_major())
    err, driver = cudart.cudaDriverGetVersion()
    return GpuInfo(name.split("\x00", 1)[0], (int(props.major), int(props.minor)), runtime_version, source,
                   _cuda_version(int(driver)) if int(err) == 0 and driver else None, driver_release())


def tensorrt_cuda_major() -> int | None:
    """The CUDA major the installed TensorRT wheels were built for (``tensorrt-cu12`` → 12)."""
    for major in (13, 12, 11):
        for name in (f"tensorrt-cu{major}", f"tensorrt-cu{major}-libs", f"tensorrt_cu{major}_libs"):
            try:
                importlib.metadata.version(name)
                return major
            except importlib.metadata.PackageNotFoundError:
                continue
    return None


def cudart_candidates(cuda_major: int | None = None) -> list[str]:
    """Where the CUDA runtime library may be, most specific first: $FRAMEWATCH_CUDART, the pip
    ``nvidia-cuda-runtime`` wheels TensorRT's wheels depend on, then the loader's search path."""
    found: list[str] = []
    if os.environ.get(CUDART_ENV):
        found.append(os.environ[CUDART_ENV])
    majors = [cuda_major] if cuda_major else [13, 12, 11]
    for base in sys.path:
        for sub in ("nvidia/cuda_runtime/lib", "nvidia/cu13/lib", "nvidia/cu12/lib"):
            for major in majors:
                found.extend(sorted(glob.glob(os.path.join(base, sub, f"libcudart.so.{major}*"))))
    found.extend(f"libcudart.so.{major}" for major in majors)
    found.append("libcudart.so")
    return list(dict.fromkeys(found))


def cuda_runtime_version(cuda_major: int | None = None, candidates: list[str] | None = None,
                         load: Any = ctypes.CDLL) -> tuple[tuple[int, int] | None, str]:
    """(major, minor) of the CUDA runtime library TensorRT runs on, and which library said so.

    Read from ``libcudart``'s own ``cudaRuntimeGetVersion`` through ctypes. Unknown (None, with
    the reason) when no runtime library loads; callers then do not refuse on CUDA's account."""
    tried = []
    for candidate in candidates if candidates is not None else cudart_candidates(cuda_major):
        try:
            lib = load(candidate)
            version = ctypes.c_int(0)
            if int(lib.cudaRuntimeGetVersion(ctypes.byref(version))) == 0 and version.value > 0:
                return _cuda_version(version.value), candidate
        except (OSError, AttributeError) as exc:
            tried.append(f"{candidate}: {exc.__class__.__name__}")
    return None, "no CUDA runtime library could be loaded" + (f" (tried {len(tried)})" if tried else "")


def driver_release(path: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The NVIDIA kernel driver's release ("550.54.15"), where Linux exposes it."""
    try:
        match = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9]+\.[0-9.]+)", path.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def cuda_python_version() -> str | None:
    for name in ("cuda-python", "cuda-bindings"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


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


