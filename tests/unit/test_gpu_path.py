"""The GPU path where no GPU exists: each test catches a kind of defect found by reading the GPU
code against the TensorRT, cuda-python, PyAV and ONNX Runtime documentation (issue 17).

What runs for real here: PyAV's hardware-decoder attachment and its failure on a machine without
CUDA, a CUDA runtime library loaded through ctypes (a stand-in compiled with gcc), the extras'
version ranges against the support matrix, ONNX Runtime falling back from an unavailable provider.
What is replaced: the ``tensorrt`` module and ``cuda.bindings`` (fakes that record calls and copy
bytes with ctypes), because neither can run without an NVIDIA GPU.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from framewatch.benchmarks import gpu_check
from framewatch.engines import tensorrt_build as trt_build
from framewatch.engines import tensorrt_platform as trt
from framewatch.engines import tensorrt_runtime as trt_run
from framewatch.engines.base import EngineError
from framewatch.worker import decode
from tests.unit.test_engines import A10, V100, FakeRuntime, make_artifact

ROOT = Path(__file__).resolve().parents[2]


# --- 1. hardware decoding -------------------------------------------------------------------

def _clip() -> bytes:
    return decode._probe_clip(width=128, height=96, frames=6)


def _no_device(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """av.open fails as it did on this CPU machine whenever a device is asked for (so the tests
    behave the same on a GPU machine); returns the hwaccel argument of every open."""
    seen: list[Any] = []
    real_open = av.open

    def open_without_device(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("hwaccel"))
        if kwargs.get("hwaccel") is not None:
            raise PermissionError(1, "Operation not permitted")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(decode.av, "open", open_without_device)
    return seen


def test_hwaccel_is_passed_to_av_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyAV 14.1+ takes the hardware decoder at open; the codec context's attribute is read-only."""
    from av.codec.hwaccel import HWAccel

    clip = _clip()
    with av.open(io.BytesIO(clip), format="mpegts") as container, pytest.raises(AttributeError):
        container.streams.video[0].codec_context.hwaccel = HWAccel("cuda")  # type: ignore[misc]  # the old way cannot work
    seen = _no_device(monkeypatch)
    decode.decode_segment(decode.DecodeRequest(payload=clip, content_type="video/mp2t", width=32, height=32, hwaccel="cuda"))
    assert isinstance(seen[0], HWAccel)
    assert seen[1:] == [None]  # the device failed: the same bytes were opened again for software


def test_a_failing_device_decodes_in_software_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    clip = _clip()
    plain = decode.decode_segment(decode.DecodeRequest(payload=clip, content_type="video/mp2t", width=32, height=32, sample_fps=25))
    _no_device(monkeypatch)
    result = decode.decode_segment(decode.DecodeRequest(payload=clip, content_type="video/mp2t", width=32, height=32, sample_fps=25,
                                                        hwaccel="cuda"))
    assert plain.hwaccel is None
    assert result.hwaccel is not None and result.hwaccel.startswith("software: ") and "PermissionError" in result.hwaccel
    assert [f.pts_ms for f in result.frames] == [f.pts_ms for f in plain.frames] and len(result.frames) == 6
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(result.frames, plain.frames, strict=True))


def test_ffmpeg_errors_of_a_real_failed_device_open_are_not_held_against_the_message() -> None:
    """Where no CUDA exists (this machine), FFmpeg logs "Cannot load libcuda.so.1" at ERROR level
    while the device open fails; strict mode must still accept the message."""
    if decode.av.codec.hwaccel.hwdevices_available() and _cuda_works():
        pytest.skip("CUDA works here: the device open does not fail")
    result = decode.decode_segment(decode.DecodeRequest(payload=_clip(), content_type="video/mp2t", width=32, height=32, hwaccel="cuda"))
    assert result.frames and result.hwaccel is not None and result.hwaccel.startswith("software")


def _cuda_works() -> bool:
    try:
        decode.probe_hwaccel("cuda")
        return True
    except decode.HWAccelError:
        return False


def test_a_message_the_device_cannot_decode_is_decoded_in_software(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVDEC refuses some streams mid-decode and FFmpeg logs an error: the message is retried in software."""
    real = decode._decode_checked

    def device_refuses(request: decode.DecodeRequest) -> decode.DecodeResult:
        if request.hwaccel:
            raise decode.DecodeError("decode-error", "FFmpeg reported 1 error(s), first: h264: Hardware is lacking required capabilities")
        return real(request)

    monkeypatch.setattr(decode, "_decode_checked", device_refuses)
    result = decode.decode_segment(decode.DecodeRequest(payload=_clip(), content_type="video/mp2t", width=32, height=32, hwaccel="cuda"))
    assert len(result.frames) >= 1 and result.hwaccel is not None and "lacking required capabilities" in result.hwaccel
    with pytest.raises(decode.DecodeError) as raised:  # bytes that are not media fail in software as well, as not-media
        decode.decode_segment(decode.DecodeRequest(payload=b"\x00junk" * 500, content_type="video/mp4", width=32, height=32, hwaccel="cuda"))
    assert raised.value.error_type == "not-media"


def test_still_images_never_use_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, format="PNG")
    seen = _no_device(monkeypatch)
    result = decode.decode_segment(decode.DecodeRequest(payload=buffer.getvalue(), content_type="image/png", width=8, height=8, hwaccel="cuda"))
    assert seen == [None] and result.hwaccel is None and len(result.frames) == 1


def test_the_start_up_probe_refuses_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from framewatch.errors import FrameWatchError
    from framewatch.worker.service import check_hwaccel

    with pytest.raises(FrameWatchError, match="has no 'no-such-device' device") as raised:
        check_hwaccel("no-such-device")
    assert "decode.hwaccel=no-such-device" in str(raised.value) and "Unset decode.hwaccel" in str(raised.value)
    _no_device(monkeypatch)
    with pytest.raises(FrameWatchError, match="cannot decode on 'cuda': PermissionError"):
        check_hwaccel("cuda")


def test_the_worker_refuses_to_start_with_hwaccel_it_cannot_use(tmp_path: Path) -> None:
    env = {**os.environ, "FRAMEWATCH_DECODE__HWACCEL": "no-such-device"}
    done = subprocess.run([sys.executable, "-m", "framewatch.cli", "worker", "--model", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert "decode.hwaccel=no-such-device" in done.stderr and "Traceback" not in done.stderr


# --- 4. the CUDA version comes from the runtime library -------------------------------------

class FakeCudart:
    """cuda.bindings.runtime's calls framewatch makes, with ctypes buffers for memory."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3

    def __init__(self, name: str = "Tesla V100-SXM2-16GB", cc: tuple[int, int] = (7, 0), bindings_version: int = 13050,
                 stream: int = 0x5A5A, corrupt: bool = False) -> None:
        self.name, self.cc, self.bindings_version, self.stream, self.corrupt = name, cc, bindings_version, stream, corrupt
        self.buffers: dict[int, Any] = {}

    def _alloc(self, n: int) -> tuple[int, int]:
        buffer = ctypes.create_string_buffer(n)
        self.buffers[ctypes.addressof(buffer)] = buffer
        return 0, ctypes.addressof(buffer)

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return 0, 1

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, Any]:
        return 0, SimpleNamespace(name=self.name.encode() + b"\x00\x00", major=self.cc[0], minor=self.cc[1])

    def cudaRuntimeGetVersion(self) -> tuple[int, int]:
        return 0, self.bindings_version

    def cudaDriverGetVersion(self) -> tuple[int, int]:
        return 0, 12080

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, self.stream

    def cudaMallocHost(self, n: int) -> tuple[int, int]:
        return self._alloc(n)

    def cudaMalloc(self, n: int) -> tuple[int, int]:
        return self._alloc(n)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        ctypes.memmove(dst, src, n)
        if self.corrupt and kind == self.cudaMemcpyKind.cudaMemcpyDeviceToDevice:
            ctypes.memset(dst, 0, 16)
        return (0,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaFree(self, ptr: int) -> tuple[int]:
        return (0,)

    cudaFreeHost = cudaFree
    cudaStreamDestroy = cudaFree


@pytest.fixture(scope="module")
def fake_libcudart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared library exporting cudaRuntimeGetVersion = 12060, loaded through ctypes as libcudart is."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the stand-in libcudart")
    folder = tmp_path_factory.mktemp("cudart")
    (folder / "cudart.c").write_text("int cudaRuntimeGetVersion(int *v) { *v = 12060; return 0; }\n")
    library = folder / "libcudart.so.12"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(folder / "cudart.c")], check=True, timeout=60)
    return library


def test_the_runtime_version_is_the_library_s_not_cuda_python_s(fake_libcudart: Path) -> None:
    runtime = trt.cuda_runtime_version(candidates=["libcudart.so.does-not-exist", str(fake_libcudart)])
    assert runtime == ((12, 6), str(fake_libcudart))
    gpu = trt.query_gpu(FakeCudart(bindings_version=13050), 0, runtime)
    assert gpu.cuda_runtime_version == (12, 6) and gpu.driver_cuda_version == (12, 8)
    trt.check_support("10.4.0", gpu)  # a V100 on TensorRT 10.4 / CUDA 12 with cuda-python 13 installed: accepted
    with pytest.raises(EngineError, match="CUDA 13"):  # what the bindings' number would have said
        trt.check_support("10.4.0", trt.GpuInfo(gpu.name, gpu.compute_capability, (13, 5)))


def test_the_runtime_library_named_in_the_environment_comes_first(fake_libcudart: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trt.CUDART_ENV, str(fake_libcudart))
    assert trt.cudart_candidates(12)[0] == str(fake_libcudart)
    assert trt.cuda_runtime_version(12) == ((12, 6), str(fake_libcudart))


def test_no_runtime_library_is_unknown_not_refused() -> None:
    version, why = trt.cuda_runtime_version(candidates=["libcudart.so.does-not-exist"])
    assert version is None and "could be loaded" in why
    trt.check_support("10.4.0", trt.GpuInfo("Tesla V100", (7, 0), None))


# --- 5. one extra per GPU generation, checked against the support matrix --------------------

RELEASED_TENSORRT = ["10.0.1", "10.1.0", "10.2.0", "10.3.0", "10.4.0", "10.5.0", "10.6.0", "10.7.0", "10.8.0", "10.9.0",
                     "10.10.0", "10.11.0", "10.12.0", "10.13.3", "10.14.1", "11.0.0", "11.4.0"]
RELEASED_CUDA_PYTHON = ["12.3.0", "12.4.0", "12.6.2", "12.8.0", "12.9.0", "13.0.0", "13.4.4"]


def _extra(name: str) -> dict[str, Requirement]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {Requirement(line).name: Requirement(line) for line in extras[name]}


@pytest.mark.parametrize(("extra", "gpus"), [
    ("tensorrt-volta", [trt.GpuInfo("Tesla V100", (7, 0), (12, 4))]),
    ("tensorrt", [trt.GpuInfo("Tesla T4", (7, 5), (12, 6)), A10, trt.GpuInfo("NVIDIA H100", (9, 0), (12, 8))]),
])
def test_each_extra_installs_only_what_its_gpus_accept(extra: str, gpus: list[trt.GpuInfo]) -> None:
    requirements = _extra(extra)
    tensorrt = requirements["tensorrt-cu12"]
    allowed = [v for v in RELEASED_TENSORRT if tensorrt.specifier.contains(v)]
    assert allowed, f"{extra} allows no released TensorRT"
    for gpu in gpus:
        for version in RELEASED_TENSORRT:
            try:
                trt.check_support(version, gpu)
                supported = True
            except EngineError:
                supported = False
            if version in allowed:
                assert supported, f"{extra} installs TensorRT {version}, which framewatch refuses on {gpu.name}"
    cuda_python = [v for v in RELEASED_CUDA_PYTHON if requirements["cuda-python"].specifier.contains(v)]
    assert cuda_python and all(Version(v).major == 12 for v in cuda_python), f"{extra}: cuda-python must match the cu12 TensorRT wheels"


def test_the_volta_extra_stops_before_tensorrt_10_5() -> None:
    spec = _extra("tensorrt-volta")["tensorrt-cu12"].specifier
    assert spec.contains("10.4.0") and not spec.contains("10.5.0") and not spec.contains("11.0.0")


# --- 6. the GPU check checks what it prints ------------------------------------------------

def test_the_gpu_check_round_trip_verifies_the_stream_and_the_bytes() -> None:
    detail = gpu_check.cuda_python_roundtrip(FakeCudart(), size=4096)
    assert detail["stream_handle_nonzero"] is True and detail["bytes_identical"] is True
    with pytest.raises(AssertionError, match="default stream"):
        gpu_check.cuda_python_roundtrip(FakeCudart(stream=0), size=4096)
    with pytest.raises(AssertionError, match="bytes changed"):
        gpu_check.cuda_python_roundtrip(FakeCudart(corrupt=True), size=4096)


def test_the_gpu_check_reports_the_versions_it_used(fake_libcudart: Path) -> None:
    runtime = trt.cuda_runtime_version(candidates=[str(fake_libcudart)])
    found = gpu_check.gpu_and_matrix(FakeCudart(bindings_version=13050), runtime)
    assert found["gpu"] == "Tesla V100-SXM2-16GB" and found["cuda_runtime"] == (12, 6) and found["cuda_python_built_for"] == (13, 5)
    assert found["driver_cuda_version"] == (12, 8)
    assert found["tensorrt_matrix"]["10.4.0"] == "supported" and found["tensorrt_matrix"]["10.5.0"].startswith("refused")


# --- 7 and 9. TF32 and the timing cache in the Python API build ------------------------------

class FakeConfig:
    def __init__(self, accept_cache: bool = True) -> None:
        self.flags: set[str] = {"TF32"}  # TensorRT's default on Ampere and newer
        self.accept_cache = accept_cache
        self.attached: list[bytes] = []

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        pass

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: str) -> None:
        self.flags.discard(flag)

    def get_flag(self, flag: str) -> bool:
        return flag in self.flags

    def add_optimization_profile(self, profile: Any) -> None:
        pass

    def create_timing_cache(self, data: bytes) -> Any:
        if data and not data.startswith(b"TC:"):
            return None  # what TensorRT returns for bytes it cannot read
        return SimpleNamespace(data=data or b"TC:new", serialize=lambda: data + b"+" if data else b"TC:new")

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        if cache.data.startswith(b"TC:other-gpu") and not ignore_mismatch and not self.accept_cache:
            return False
        self.attached.append(cache.data)
        return True

    def get_timing_cache(self) -> Any:
        data = self.attached[-1]
        return SimpleNamespace(serialize=lambda: data + b"+")


def fake_tensorrt(version: str, config: FakeConfig) -> Any:
    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Any:
            return object()

        def create_builder_config(self) -> FakeConfig:
            return config

        def create_optimization_profile(self) -> Any:
            return SimpleNamespace(set_shape=lambda *a: None)

        def build_serialized_network(self, network: Any, cfg: FakeConfig) -> bytes:
            return b"PLAN tf32=" + str("TF32" in cfg.flags).encode()

    class OnnxParser:
        def __init__(self, network: Any, logger: Any) -> None:
            self.num_errors = 0

        def parse(self, data: bytes, path: str) -> bool:
            return True

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    return SimpleNamespace(
        __version__=version, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        BuilderFlag=SimpleNamespace(FP16="FP16", TF32="TF32"), MemoryPoolType=SimpleNamespace(WORKSPACE=0),
        NetworkDefinitionCreationFlag=SimpleNamespace(),
    )


def _library(version: str, config: FakeConfig, gpu: str = "NVIDIA A10", cc: tuple[int, int] = (8, 6)) -> trt.TensorRTLibrary:
    return trt.TensorRTLibrary(trt=fake_tensorrt(version, config), cudart=FakeCudart(gpu, cc), runtime_version=((12, 6), "test"))


def test_fp32_builds_clear_tf32_fp16_builds_keep_it(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    config = FakeConfig()
    plan, info = trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(precision="fp32"), runtime=_library("10.8.0", config))
    assert plan.read_bytes() == b"PLAN tf32=False" and info.tf32 is False
    assert json.loads((plan.parent / "build.json").read_text())["tf32"] is False
    config = FakeConfig()
    plan, info = trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(precision="fp16"), runtime=_library("10.8.0", config))
    assert {"FP16", "TF32"} <= config.flags and info.tf32 is True


def test_trtexec_fp32_has_no_tf32(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    fp32 = trt_build.trtexec_command("trtexec", tmp_path / "m.onnx", tmp_path / "p", manifest, trt.BuildRequest(precision="fp32"), "10.8.0")
    fp16 = trt_build.trtexec_command("trtexec", tmp_path / "m.onnx", tmp_path / "p", manifest, trt.BuildRequest(precision="fp16"), "10.8.0")
    assert "--noTF32" in fp32 and "--noTF32" not in fp16


def test_timing_caches_are_kept_per_tensorrt_version_and_gpu_model(tmp_path: Path) -> None:
    folder = tmp_path / "caches"
    names = {trt.timing_cache_file(folder, v, g).name for v, g in [("10.3.0", V100), ("10.4.0", V100), ("10.4.0", A10)]}
    assert len(names) == 3
    folder.write_text("a file")
    with pytest.raises(EngineError, match="names a folder"):
        trt.timing_cache_file(folder, "10.4.0", A10)


def test_a_corrupt_timing_cache_is_replaced_not_fatal(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    library = _library("10.8.0", FakeConfig())
    cache = trt.timing_cache_file(tmp_path / "caches", "10.8.0", library.gpu())
    cache.parent.mkdir()
    cache.write_bytes(b"\x00garbage")
    plan, info = trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(timing_cache=tmp_path / "caches"), runtime=library)
    assert plan.exists() and info.timing_cache is not None and info.timing_cache.startswith("unreadable")
    assert cache.read_bytes() == b"TC:new+"  # the fresh cache replaced the corrupt one


def test_a_timing_cache_of_another_gpu_is_rejected_and_replaced(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    config = FakeConfig(accept_cache=False)
    library = _library("10.8.0", config)
    cache = trt.timing_cache_file(tmp_path / "caches", "10.8.0", library.gpu())
    cache.parent.mkdir()
    cache.write_bytes(b"TC:other-gpu")
    _, info = trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(timing_cache=tmp_path / "caches"), runtime=library)
    assert info.timing_cache is not None and info.timing_cache.startswith("rejected") and config.attached == [b"TC:new"]
    _, info = trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(timing_cache=tmp_path / "caches"), runtime=library)
    assert info.timing_cache is not None and info.timing_cache.startswith("reused")


# --- 8. the compose build: writable cache, --if-missing -------------------------------------

def test_an_unwritable_engine_cache_is_named_before_building(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    (tmp_path / "engines").write_text("not a folder")  # as good as a folder owned by someone else
    with pytest.raises(EngineError, match=r"cannot write the engine cache"):
        trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(), runtime=FakeRuntime("10.8.0", A10))  # type: ignore[arg-type]


def test_if_missing_keeps_a_matching_plan_and_rebuilds_a_stale_one(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    runtime = FakeRuntime("10.8.0", A10)
    assert trt_build.existing_engine(tmp_path, manifest, runtime) is None  # type: ignore[arg-type]
    trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(), runtime=runtime)  # type: ignore[arg-type]
    found = trt_build.existing_engine(tmp_path, manifest, runtime)  # type: ignore[arg-type]
    assert found is not None and found[1].tensorrt_version == "10.8.0"
    same = trt.BuildRequest()
    assert trt_build.existing_engine(tmp_path, manifest, runtime, same) is not None  # type: ignore[arg-type]
    for changed in (trt.BuildRequest(precision="fp32"), trt.BuildRequest(max_batch=128), trt.BuildRequest(workspace_mb=512)):
        assert trt_build.existing_engine(tmp_path, manifest, runtime, changed) is None  # type: ignore[arg-type]
    retrained = make_artifact(tmp_path, graph=b"retrained")
    assert trt_build.existing_engine(tmp_path, retrained, runtime) is None  # type: ignore[arg-type]


# --- 10. provenance -------------------------------------------------------------------------

@pytest.mark.parametrize(("output", "version"), [("[TensorRT v100300] # trtexec", "10.3.0"), ("[TensorRT v101301]", "10.13.1"),
                                                 ("[TensorRT v8601]", "8.6.1"), ("no version here", None)])
def test_trtexec_version_is_read_from_its_output(output: str, version: str | None) -> None:
    assert trt_build.trtexec_version(output) == version


def test_a_trtexec_of_another_version_is_refused_and_nothing_filed(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)

    def run(cmd: list[str], **_: Any) -> SimpleNamespace:
        Path(cmd[2].split("=", 1)[1]).write_bytes(b"plan")
        return SimpleNamespace(returncode=0, stdout="&&&& RUNNING TensorRT.trtexec [TensorRT v100300]", stderr="")

    with pytest.raises(EngineError, match=r"trtexec is TensorRT 10\.3\.0 but the Python tensorrt .* is 10\.4\.0"):
        trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(), use_trtexec=True, trtexec="trtexec",
                               runtime=FakeRuntime("10.4.0", V100), run_command=run)  # type: ignore[arg-type]
    assert not list((tmp_path / "engines").rglob("*.plan*")) and not list((tmp_path / "engines").rglob("build.json"))


def test_build_json_records_the_gpu_driver_and_cuda_and_says_when_built_elsewhere(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    gpu = trt.GpuInfo("NVIDIA A10", (8, 6), (12, 6), "libcudart.so.12", (12, 8), "550.54.15")
    _, info = trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(), runtime=FakeRuntime("10.8.0", gpu))  # type: ignore[arg-type]
    assert (info.cuda_runtime, info.driver_cuda_version, info.driver_release) == ("12.6", "12.8", "550.54.15")
    assert trt_run.provenance_note(info, gpu) is None
    elsewhere = trt.GpuInfo("NVIDIA A10G", (8, 6), (12, 6), "x", (12, 8), "560.1")
    usable, reason = trt_run.probe(tmp_path, manifest, FakeRuntime("10.8.0", elsewhere))  # type: ignore[arg-type]
    assert usable and "for a NVIDIA A10 (this is a NVIDIA A10G" in reason and "driver 550.54.15" in reason


def test_an_older_build_json_still_reads(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    plan, _ = trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(), runtime=FakeRuntime("10.8.0", A10))  # type: ignore[arg-type]
    data = json.loads((plan.parent / "build.json").read_text())
    for key in ("cuda_runtime", "cuda_runtime_source", "driver_cuda_version", "driver_release", "cuda_python", "tf32", "timing_cache"):
        data.pop(key)
    (plan.parent / "build.json").write_text(json.dumps(data))
    assert trt_run.probe(tmp_path, manifest, FakeRuntime("10.8.0", A10))[0] is True  # type: ignore[arg-type]


# --- 2. ONNX Runtime says when its CUDA provider did not start --------------------------------

def test_onnxruntime_says_when_the_cuda_provider_does_not_start(exported_model: Path) -> None:
    from framewatch.engines.manifest import load_manifest
    from framewatch.engines.onnxrt import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(exported_model, load_manifest(exported_model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert engine.providers[0] == "CPUExecutionProvider"
    assert engine.fallback is not None and "CUDAExecutionProvider could not start" in engine.fallback
