"""`framewatch engine build|check`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _build(args: argparse.Namespace) -> int:
    from framewatch.engines.manifest import load_manifest
    from framewatch.engines.tensorrt_build import BuildRequest, build_engine, existing_engine
    from framewatch.engines.tensorrt_platform import TensorRTLibrary

    manifest = load_manifest(args.artifact)
    request = BuildRequest(args.max_batch, args.opt_batch, args.precision, args.workspace_mb, args.timing_cache)
    runtime = TensorRTLibrary()
    found = existing_engine(args.artifact, manifest, runtime, request) if args.if_missing else None
    if found is not None:
        plan, info = found
        print(f"kept {plan}, built {info.built_at} by TensorRT {info.tensorrt_version} on {info.gpu_name}: "
              "it matches this TensorRT, GPU and ONNX graph (--if-missing)")
        return 0
    plan, info = build_engine(args.artifact, manifest, request, use_trtexec=args.use_trtexec, trtexec=args.trtexec, runtime=runtime)
    tf32 = "unknown" if info.tf32 is None else "allowed" if info.tf32 else "off"
    print(f"built {plan} ({info.precision}, TensorRT {info.tensorrt_version}, {info.gpu_name} sm{info.compute_capability}) "
          f"in {info.build_seconds} s; TF32 {tf32}; timing cache: {info.timing_cache}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from framewatch.engines.check import check_engine

    result = check_engine(args.artifact, args.backend)
    print(json.dumps(result, indent=2))
    return 0 if result["max_abs_diff_vs_reference"] <= args.tolerance else 1


def register(commands: argparse._SubParsersAction) -> None:
    engine = commands.add_parser("engine", help="build and check TensorRT/ONNX Runtime engines",
                                 description="Build a TensorRT engine for this GPU and TensorRT version, or check an engine's parity and speed.")
    sub = engine.add_subparsers(dest="engine_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build", help="build ARTIFACT/engines/<trt-version>/sm<XY>/model.plan",
        description="Build with an optimisation profile over the dynamic batch (1 … --max-batch, tuned for --opt-batch), through "
        "the TensorRT Python API or trtexec. FP16 on TensorRT 10 uses BuilderFlag.FP16; on TensorRT 11 (strongly typed) it "
        "builds from model.fp16.onnx (framewatch export --fp16). FP32 builds clear TF32. build.json records the builder's TensorRT, "
        "the GPU, CUDA runtime and driver. Needs an NVIDIA GPU, TensorRT 10.0+ and cuda-python (docs/deployment.md: which for your GPU).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    build.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR")
    build.add_argument("--max-batch", type=int, default=64)
    build.add_argument("--opt-batch", type=int, default=32)
    build.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    build.add_argument("--workspace-mb", type=int, default=2048)
    build.add_argument("--timing-cache", type=Path, default=None, metavar="DIR",
                       help="folder of timing caches, one file per TensorRT version and GPU model, reused and updated "
                       "(Python API: a cache TensorRT rejects or cannot read is replaced, and build.json says so; trtexec "
                       "ignores a mismatched cache itself)")
    build.add_argument("--use-trtexec", action="store_true", help="run trtexec (printed and stored in build.json); refused "
                       "when trtexec's TensorRT version differs from the Python tensorrt that runs the engine")
    build.add_argument("--if-missing", action="store_true", help="keep a cached plan that matches this TensorRT, GPU and "
                       "ONNX graph, and was built with this precision, batch profile and workspace, instead of rebuilding "
                       "(what docker/compose.yaml's one-shot build uses)")
    build.add_argument("--trtexec", default=None, help="path to trtexec (default: from PATH)")
    build.set_defaults(handler=_build)
    check = sub.add_parser("check", help="parity with the artifact's reference frames and throughput by batch size",
                           description="Run the engine on the reference frames stored in the artifact at export and compare its "
                           "probabilities with those PyTorch gave them; exit 1 when max |Δp| exceeds --tolerance.")
    check.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR")
    check.add_argument("--backend", default="auto", help="auto, onnxruntime, tensorrt (or a plugin backend)")
    check.add_argument("--tolerance", type=float, default=1e-2, help="exit 1 when max |Δp| exceeds this (FP16 engines differ ~1e-3)")
    check.set_defaults(handler=_check)
