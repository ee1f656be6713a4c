"""Engine selection, the manifest contract, and the TensorRT code around the TensorRT/CUDA boundary.

TensorRT cannot run here (no GPU); these tests replace only ``TensorRTLibrary`` — the one class
that touches tensorrt and cuda.bindings — and check everything framewatch does around it.
benchmarks/gpu_check.py runs the real thing on a GPU machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from framewatch.engines import tensorrt_build as trt_build
from framewatch.engines import tensorrt_platform as trt
from framewatch.engines import tensorrt_runtime as trt_run
from framewatch.engines.base import EngineError
from framewatch.engines.manifest import (
    FORMAT_VERSION,
    ManifestError,
    ModelManifest,
    Preprocessing,
    load_manifest,
    sha256_file,
    write_manifest,
)
from framewatch.engines.registry import select_backend


def make_artifact(folder: Path, fp16: bool = False, graph: bytes = b"fp32-graph") -> ModelManifest:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(graph)
    if fp16:
        (folder / "model.fp16.onnx").write_bytes(b"fp16-graph")
    manifest = ModelManifest(
        format_version=FORMAT_VERSION, name="m", onnx_sha256=sha256_file(folder / "model.onnx"),
        onnx_fp16_file="model.fp16.onnx" if fp16 else None,
        onnx_fp16_sha256=sha256_file(folder / "model.fp16.onnx") if fp16 else None,
        input_height=64, input_width=64, labels=["non-violent", "violent"], violent_index=1,
        preprocessing=Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)), opset=17,
    )
    write_manifest(folder, manifest)
    return manifest


# --- manifest ----------------------------------------------------------------------------

def test_manifest_round_trips(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path, fp16=True)
    assert load_manifest(tmp_path) == manifest


def test_manifest_refuses_other_format_version(tmp_path: Path) -> None:
    make_artifact(tmp_path)
    raw = json.loads((tmp_path / "model.json").read_text())
    raw["format_version"] = 99
    (tmp_path / "model.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"format_version 99"):
        load_manifest(tmp_path)


def test_manifest_detects_modified_onnx(tmp_path: Path) -> None:
    make_artifact(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="modified after export"):
        load_manifest(tmp_path)


def test_manifest_missing_and_invalid(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"model\.json is missing"):
        load_manifest(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ManifestError, match="onnx_sha256"):
        load_manifest(tmp_path)


# --- backend selection -------------------------------------------------------------------

PRIORITIES = {"tensorrt": 100, "onnxruntime": 10}


def test_auto_prefers_a_matching_tensorrt_engine() -> None:
    choice = select_backend("auto", {"tensorrt": (True, "engine ok"), "onnxruntime": (True, "CPU provider")}, PRIORITIES)
    assert choice.backend == "tensorrt"


def test_auto_falls_back_to_onnxruntime_and_says_why() -> None:
    choice = select_backend("auto", {"tensorrt": (False, "no engine"), "onnxruntime": (True, "ONNX Runtime CPU provider")}, PRIORITIES)
    assert choice.backend == "onnxruntime" and "no engine" in choice.reason and "CPU" in choice.reason


def test_explicit_tensorrt_without_it_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match="backend=tensorrt was requested"):
        select_backend("tensorrt", {"tensorrt": (False, "no CUDA GPU is visible")}, PRIORITIES)


def test_unknown_backend_names_the_registered_ones() -> None:
    with pytest.raises(EngineError, match="registered: onnxruntime, tensorrt"):
        select_backend("openvino", {}, PRIORITIES)


def test_explicit_onnxruntime_ignores_tensorrt() -> None:
    assert select_backend("onnxruntime", {"onnxruntime": (True, "ok")}, PRIORITIES).backend == "onnxruntime"


def test_backends_register_themselves_and_load_is_one_factory(tmp_path: Path) -> None:
    """A plugin backend registered with a higher priority wins auto, through the one factory."""
    from framewatch.engines import base, registry

    make_artifact(tmp_path)
    made: list[str] = []

    class Echo:
        backend = "echo"

        def __init__(self, m: ModelManifest) -> None:
            self.name, self.max_batch, self.input_size = m.name, m.max_batch, (m.input_height, m.input_width)
            self.labels, self.violent_index, self.interpolation = list(m.labels), m.violent_index, m.preprocessing.resize

        def infer(self, batch: Any) -> Any:
            return batch

    def create(path: Path, m: ModelManifest, options: base.EngineOptions) -> Echo:
        made.append(path.name)
        return Echo(m)

    assert {"onnxruntime", "tensorrt"} <= set(registry.backends())
    base.register_backend("echo", priority=1000, probe=lambda path, m: (True, "always"), create=create)
    try:
        engine = registry.load(tmp_path, "auto", verify_hash=False)
        assert engine.backend == "echo" and made == [tmp_path.name] and engine.interpolation == "bilinear"
        assert isinstance(engine, base.Engine)
    finally:
        base._REGISTRY.pop("echo")


# --- GPU / TensorRT support matrix -------------------------------------------------------

V100 = trt.GpuInfo("Tesla V100-SXM2-16GB", (7, 0), (12, 4))
A10 = trt.GpuInfo("NVIDIA A10", (8, 6), (12, 6))
H100 = trt.GpuInfo("NVIDIA H100", (9, 0), (13, 0))


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0", "10.4.0"])
def test_v100_runs_tensorrt_10_0_to_10_4(version: str) -> None:
    trt.check_support(version, V100)


@pytest.mark.parametrize("version", ["10.5.0", "10.13.2", "11.0.0"])
def test_v100_refused_from_tensorrt_10_5(version: str) -> None:
    with pytest.raises(EngineError, match=r"10\.0–10\.4"):
        trt.check_support(version, V100)


def test_v100_refused_on_cuda_13() -> None:
    with pytest.raises(EngineError, match="CUDA 13"):
        trt.check_support("10.3.0", trt.GpuInfo("Tesla V100", (7, 0), (13, 0)))


def test_newer_gpus_and_old_tensorrt() -> None:
    trt.check_support("10.13.0", A10)
    trt.check_support("11.1.0", H100)
    with pytest.raises(EngineError, match="too old"):
        trt.check_support("8.6.1", A10)


# --- trtexec command line -----------------------------------------------------------------

def test_trtexec_command_tensorrt_10_fp16(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    request = trt.BuildRequest(max_batch=64, opt_batch=32, precision="fp16", workspace_mb=1024, timing_cache=tmp_path)
    cmd = trt_build.trtexec_command("trtexec", tmp_path / "model.onnx", tmp_path / "model.plan", manifest, request, "10.4.0",
                                    tmp_path / "t.cache")
    assert cmd == [
        "trtexec", f"--onnx={tmp_path / 'model.onnx'}", f"--saveEngine={tmp_path / 'model.plan'}",
        "--minShapes=pixels:1x64x64x3", "--optShapes=pixels:32x64x64x3", "--maxShapes=pixels:64x64x64x3",
        "--memPoolSize=workspace:1024M", "--fp16", f"--timingCacheFile={tmp_path / 't.cache'}", "--skipInference",
    ]


def test_trtexec_command_tensorrt_11_has_no_precision_flag(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path, fp16=True)
    request = trt.BuildRequest(precision="fp16")
    onnx_path, sha = trt_build.onnx_for_precision(tmp_path, manifest, "fp16", "11.0.0")
    assert onnx_path.name == "model.fp16.onnx" and sha == manifest.onnx_fp16_sha256
    cmd = trt_build.trtexec_command("trtexec", onnx_path, tmp_path / "p", manifest, request, "11.0.0")
    assert "--fp16" not in cmd and f"--onnx={onnx_path}" in cmd


def test_tensorrt_11_fp16_needs_the_fp16_graph(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path, fp16=False)
    with pytest.raises(EngineError, match="--fp16"):
        trt_build.onnx_for_precision(tmp_path, manifest, "fp16", "11.0.0")
    assert trt_build.onnx_for_precision(tmp_path, manifest, "fp16", "10.8.0")[0].name == "model.onnx"


def test_build_request_validates_batches() -> None:
    with pytest.raises(EngineError, match="--opt-batch"):
        trt.BuildRequest(max_batch=8, opt_batch=16)


# --- build and load with the TensorRT/CUDA boundary replaced -------------------------------

class FakeRuntime:
    """Stands in for TensorRTLibrary: records what the builder asked for."""

    def __init__(self, version: str, gpu: trt.GpuInfo) -> None:
        self.version = version
        self._gpu = gpu
        self.builds: list[tuple[Path, trt.BuildRequest, bytes | None]] = []

    def gpu(self, device: int = 0) -> trt.GpuInfo:
        return self._gpu

    def build(self, onnx_path: Path, manifest: ModelManifest, request: trt.BuildRequest, timing_cache: bytes | None) -> trt.BuildOutput:
        self.builds.append((onnx_path, request, timing_cache))
        return trt.BuildOutput(b"PLAN:" + onnx_path.read_bytes(), b"CACHE", "reused" if timing_cache else "new",
                               False if request.precision == "fp32" else None)


def test_build_writes_plan_and_build_json_keyed_by_version_and_gpu(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path / "art")
    runtime = FakeRuntime("10.13.0", A10)
    caches = tmp_path / "timing"
    plan, _ = trt_build.build_engine(tmp_path / "art", manifest, trt.BuildRequest(timing_cache=caches), runtime=runtime)  # type: ignore[arg-type]
    assert plan == tmp_path / "art" / "engines" / "10.13.0" / "sm86" / "model.plan"
    assert plan.read_bytes() == b"PLAN:fp32-graph"
    assert (caches / "timing-trt10.13.0-sm86-nvidia-a10.cache").read_bytes() == b"CACHE"
    saved = json.loads((plan.parent / "build.json").read_text())
    assert saved["tensorrt_version"] == "10.13.0" and saved["compute_capability"] == "8.6" and saved["gpu_name"] == "NVIDIA A10"
    assert saved["onnx_sha256"] == manifest.onnx_sha256 and saved["precision"] == "fp16"
    assert saved["min_shape"] == [1, 64, 64, 3] and saved["opt_shape"] == [32, 64, 64, 3] and saved["max_shape"] == [64, 64, 64, 3]
    assert trt_run.probe(tmp_path / "art", manifest, runtime)[0] is True  # type: ignore[arg-type]


def test_build_with_trtexec_stores_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_artifact(tmp_path)
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_: Any) -> SimpleNamespace:
        calls.append(cmd)
        Path(cmd[2].split("=", 1)[1]).write_bytes(b"plan")
        return SimpleNamespace(returncode=0, stdout="&&&& RUNNING TensorRT.trtexec [TensorRT v100400] # trtexec ...", stderr="")

    plan, info = trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(precision="fp32"), use_trtexec=True, trtexec="/opt/trt/bin/trtexec",
                                        runtime=FakeRuntime("10.4.0", V100), run_command=fake_run)  # type: ignore[arg-type]
    assert info.builder == "trtexec" and info.command is not None and info.command.startswith("/opt/trt/bin/trtexec --onnx=")
    assert "--fp16" not in calls[0] and "--noTF32" in calls[0] and info.tf32 is False
    assert info.tensorrt_version == "10.4.0" and plan.read_bytes() == b"plan" and plan.parent.name == "sm70"
    assert info.command in capsys.readouterr().out


def test_build_refuses_unsupported_gpu(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    with pytest.raises(EngineError, match="Volta"):
        trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(), runtime=FakeRuntime("10.8.0", V100))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        (FakeRuntime("10.14.0", A10), "built with TensorRT 10.13.0"),
        (FakeRuntime("10.13.0", trt.GpuInfo("NVIDIA A100", (8, 0))), "no engine for TensorRT 10.13.0"),
    ],
)
def test_load_refuses_mismatched_engines(tmp_path: Path, runtime: FakeRuntime, message: str) -> None:
    manifest = make_artifact(tmp_path)
    trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(), runtime=FakeRuntime("10.13.0", A10))  # type: ignore[arg-type]
    if runtime.version != "10.13.0":
        # Pretend the other version's folder holds this engine, as a copied cache would.
        src = tmp_path / "engines" / "10.13.0"
        src.rename(tmp_path / "engines" / runtime.version)
    usable, reason = trt_run.probe(tmp_path, manifest, runtime)  # type: ignore[arg-type]
    assert not usable and message in reason and "framewatch engine build" in reason


def test_load_refuses_engine_of_another_onnx(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    runtime = FakeRuntime("10.13.0", A10)
    trt_build.build_engine(tmp_path, manifest, trt.BuildRequest(), runtime=runtime)  # type: ignore[arg-type]
    retrained = make_artifact(tmp_path, graph=b"retrained")  # re-export: new graph, new hash in model.json
    usable, reason = trt_run.probe(tmp_path, retrained, runtime)  # type: ignore[arg-type]
    assert not usable and "another ONNX graph" in reason
    with pytest.raises(EngineError, match="another ONNX graph"):
        trt_run.TensorRTEngine.from_artifact(tmp_path, retrained, runtime)  # type: ignore[arg-type]


def test_probe_without_tensorrt_installed_says_so(tmp_path: Path) -> None:
    manifest = make_artifact(tmp_path)
    usable, reason = trt_run.probe(tmp_path, manifest)
    assert not usable and ("TensorRT is not installed" in reason or "cuda-python" in reason or "GPU" in reason)


def test_a_version_1_manifest_is_read_with_training_s_bilinear_resize(tmp_path: Path) -> None:
    """Version 1 copied the encoder's pretraining filter (bicubic for EfficientNet-Lite) while training
    resized bilinear: read as bilinear, the worker keeps decoding as before."""
    make_artifact(tmp_path)
    data = json.loads((tmp_path / "model.json").read_text())
    data["format_version"] = 1
    data["preprocessing"]["resize"] = "bicubic"
    data.pop("reference", None)
    (tmp_path / "model.json").write_text(json.dumps(data))
    assert load_manifest(tmp_path).preprocessing.resize == "bilinear"
    data["format_version"] = 3
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="reads 1, 2"):
        load_manifest(tmp_path)


def test_a_probe_that_raises_does_not_break_auto(tmp_path: Path) -> None:
    from framewatch.engines import base, registry

    make_artifact(tmp_path)

    def broken(path: Path, m: ModelManifest) -> tuple[bool, str]:
        raise KeyError("plugin bug")

    base.register_backend("broken", priority=500, probe=broken, create=lambda *a: None)
    try:
        statuses = {"broken": registry._probe(registry.backends()["broken"], tmp_path, load_manifest(tmp_path, verify_hash=False))}
        assert statuses["broken"][0] is False and "probe failed" in statuses["broken"][1]
    finally:
        base._REGISTRY.pop("broken")
