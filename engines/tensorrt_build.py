"""Building TensorRT plans into the engine cache: the Python API or trtexec, an optimisation
profile over the dynamic batch, FP16 by flag (TensorRT 10) or from the FP16 graph (TensorRT 11),
TF32 cleared for FP32 builds, a timing cache per TensorRT version and GPU model, and
``build.json`` recording what was built from what, by which TensorRT, on which GPU and driver.

A plan is filed under the version of the TensorRT that *built* it. For trtexec that is the
version the binary prints (``[TensorRT v100300]``), which need not be the Python ``tensorrt``
that will run it: a mismatch is refused before anything is filed."""

from __future__ import annotations

import errno
import json
import os
import re
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
    GpuInfo,
    Precision,
    TensorRTLibrary,
    check_support,
    cuda_python_version,
    engine_dir,
    has_precision_flags,
    profile_shapes,
    same_release,
    timing_cache_file,
)
from framewatch.engines.tensorrt_runtime import read_build, validate_build
from framewatch.logs import get_logger

log = get_logger(__name__)

TRTEXEC_VERSION = re.compile(r"\[TensorRT v(\d+)\]")


def trtexec_version(output: str) -> str | None:
    """The TensorRT version trtexec printed ("[TensorRT v100300]" → "10.3.0"), or None."""
    match = TRTEXEC_VERSION.search(output)
    if not match:
        return None
    number = int(match.group(1))
    if number >= 100000:  # MMmmpp, TensorRT 10 and newer
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"  # 8601 → 8.6.1


def ensure_writable(folder: Path) -> None:
    """Fail before building when the engine cache cannot be written, saying whose folder it is."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        owner = ""
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise EngineError(f"cannot write the engine cache {folder}: {exc.strerror or exc}") from None
        try:
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            owner = f" ({existing} belongs to uid {existing.stat().st_uid}; this process is uid {os.getuid()})"
        except (StopIteration, OSError):
            pass
        raise EngineError(f"cannot write the engine cache {folder}: {exc.strerror or exc}{owner}. "
                          "Make the folder writable for this user (in docker/compose.yaml: FRAMEWATCH_UID=$(id -u))") from None


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
    timing_cache: Path | None = None,
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
    if request.precision == "fp32":
        cmd.append("--noTF32")  # TF32 is on by default on Ampere and newer; FP32 means FP32
    if timing_cache is not None:
        cmd.append(f"--timingCacheFile={timing_cache}")
    cmd.append("--skipInference")
    return cmd


def existing_engine(artifact_dir: Path, manifest: ModelManifest, runtime: TensorRTLibrary,
                    request: BuildRequest | None = None) -> tuple[Path, BuildInfo] | None:
    """The cached plan for this TensorRT and GPU when it matches the artifact (and, given a
    request, was built with its precision, batch profile and workspace), else None."""
    gpu = runtime.gpu()
    folder = engine_dir(artifact_dir, runtime.version, gpu)
    try:
        info = read_build(folder / BUILD_INFO_NAME)
        validate_build(artifact_dir, manifest, info, runtime.version, gpu)
    except (EngineError, OSError, TypeError, json.JSONDecodeError):
        return None
    if request is not None:
        wanted = (request.precision, *profile_shapes(manifest, request), request.workspace_mb)
        if (info.precision, info.min_shape, info.opt_shape, info.max_shape, info.workspace_mb) != wanted:
            return None
    return (folder / PLAN_NAME, info) if (folder / PLAN_NAME).exists() else None


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
    ensure_writable(out_dir)
    plan_path = out_dir / PLAN_NAME
    cache_path = timing_cache_file(request.timing_cache, trt_version, gpu) if request.timing_cache is not None else None
    min_s, opt_s, max_s = profile_shapes(manifest, request)
    started = time.monotonic()
    command_text = None
    tf32: bool | None
    if use_trtexec:
        binary = trtexec or shutil.which("trtexec")
        if binary is None:
            raise EngineError("trtexec is not on PATH (it ships in the TensorRT containers and tar packages); drop --use-trtexec to use the Python API")
        staging = out_dir / f".{PLAN_NAME}.trtexec"
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)  # trtexec does not create it (and then keeps no cache)
        cmd = trtexec_command(binary, onnx_path, staging, manifest, request, trt_version, cache_path)
        command_text = shlex.join(cmd)
        print(command_text)
        result = run_command(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            staging.unlink(missing_ok=True)
            raise EngineError(f"trtexec failed ({result.returncode}): {result.stderr[-2000:] or result.stdout[-2000:]}")
        builder_version = trtexec_version(result.stdout + result.stderr)
        if builder_version is None:
            staging.unlink(missing_ok=True)
            raise EngineError("trtexec did not print its TensorRT version ('[TensorRT vNNNNNN]'): the plan's builder is unknown, so it is not filed")
        if not same_release(builder_version, trt_version):
            staging.unlink(missing_ok=True)
            raise EngineError(f"trtexec is TensorRT {builder_version} but the Python tensorrt that runs engines here is {trt_version}: "
                              "a plan only loads in the TensorRT that built it. Use the matching trtexec or drop --use-trtexec")
        staging.replace(plan_path)
        tf32 = False if request.precision == "fp32" else None
        # trtexec attaches caches ignoring mismatches and reports nothing back: no status beyond the path.
        cache_status = f"trtexec --timingCacheFile={cache_path} (trtexec ignores a mismatched cache)" if cache_path else "none"
    else:
        builder_version = trt_version
        cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.exists() else None
        output = runtime.build(onnx_path, manifest, request, cache_bytes)
        plan_path.write_bytes(output.plan)
        tf32 = output.tf32
        cache_status = output.timing_cache_status if cache_path is not None else "none"
        if cache_path is not None and output.timing_cache:
            try:  # a cache only saves build time: failing to keep it must not fail the build
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                partial = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
                partial.write_bytes(output.timing_cache)
                partial.replace(cache_path)  # atomic: the folder may be shared by builds on other machines
                cache_status = f"{cache_status}; saved to {cache_path}"
            except OSError as exc:
                cache_status = f"{cache_status}; not saved to {cache_path}: {exc.strerror or exc}"
                log.warning("timing cache not saved", path=str(cache_path), error=str(exc))
    info = BuildInfo(
        tensorrt_version=builder_version, gpu_name=gpu.name,
        compute_capability=f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
        precision=request.precision, input_name=manifest.input_name,
        min_shape=min_s, opt_shape=opt_s, max_shape=max_s,
        onnx_file=onnx_path.name, onnx_sha256=onnx_sha, workspace_mb=request.workspace_mb,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), build_seconds=round(time.monotonic() - started, 2),
        builder="trtexec" if use_trtexec else "python-api", command=command_text,
        **provenance(gpu), tf32=tf32, timing_cache=cache_status,
    )
    (out_dir / BUILD_INFO_NAME).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return plan_path, info


def provenance(gpu: GpuInfo) -> dict[str, Any]:
    """The CUDA side of build.json: runtime (and where it was read), driver, cuda-python."""
    def dotted(version: tuple[int, int] | None) -> str | None:
        return f"{version[0]}.{version[1]}" if version else None

    return {"cuda_runtime": dotted(gpu.cuda_runtime_version), "cuda_runtime_source": gpu.cuda_runtime_source or None,
            "driver_cuda_version": dotted(gpu.driver_cuda_version), "driver_release": gpu.driver_release,
            "cuda_python": cuda_python_version()}
