"""Building TensorRT plans into the engine cache: the Python API or trtexec, an optimisation
profile over the dynamic batch, FP16 by flag (TensorRT 10) or from the FP16 graph (TensorRT 11),
a timing cache, and ``build.json`` recording what was built from what."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from framewatch.engines.base import EngineError
from framewatch.engines.manifest import ModelManifest
from framewatch.engines.tensorrt_platform import (
    BUILD_INFO_NAME,
    PLAN_NAME,
    BuildInfo,
    BuildRequest,
    Precision,
    TensorRTLibrary,
    check_support,
    engine_dir,
    has_precision_flags,
    profile_shapes,
)


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


def build_engine(
    artifact_dir: Path, manifest: ModelManifest, request: BuildRequest, *, use_trtexec: bool = False,
    trtexec: str | None = None, runtime: TensorRTLibrary | None = None, run_command: Any = subprocess.run,
) -> tuple[Path, BuildInfo]:
    """Build ``model.plan`` for this GPU and TensorRT into the engine cache; returns its path and build info."""
    runtime = runtime or TensorRTLibrary()
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


