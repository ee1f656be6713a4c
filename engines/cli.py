"""`framewatch engine build|check` and `framewatch bench engine`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _build(args: argparse.Namespace) -> int:
    from engines.api import EngineError
    from engines.manifest import load_manifest
    from engines.tensorrt_backend import BuildRequest, build_engine

    manifest = load_manifest(args.artifact)
    request = BuildRequest(args.max_batch, args.opt_batch, args.precision, args.workspace_mb, args.timing_cache)
    try:
        plan, info = build_engine(args.artifact, manifest, request, use_trtexec=args.use_trtexec, trtexec=args.trtexec)
    except EngineError as exc:
        print(f"framewatch engine build: {exc}", file=sys.stderr)
        return 2
    print(f"built {plan} ({info.precision}, TensorRT {info.tensorrt_version}, {info.gpu_name} sm{info.compute_capability}) in {info.build_seconds} s")
    return 0


def _check(args: argparse.Namespace) -> int:
    from engines.bench import check_engine

    result = check_engine(args.artifact, args.backend)
    print(json.dumps(result, indent=2))
    return 0 if result["max_abs_diff_vs_onnxruntime_cpu"] <= args.tolerance else 1


def _bench_engine(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from engines.bench import bench_engine

    result = bench_engine(args.artifact, tuple(args.batch_sizes), rounds=args.rounds)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"framewatch engine vs bare onnxruntime.InferenceSession ({result['model']})")
    for column in ("batch", "framewatch img/s", "bare img/s", "ratio", "overhead"):
        table.add_column(column, justify="right")
    for batch, row in result["batches"].items():
        table.add_row(batch, f"{row['framewatch_images_per_second']:.1f}", f"{row['bare_session_images_per_second']:.1f}",
                      f"{row['ratio']:.3f}", f"{row['overhead_percent']:+.1f}%")
    Console().print(table)
    print(f"wrote {args.json}")
    return 0


def register(commands: argparse._SubParsersAction, bench_commands: argparse._SubParsersAction) -> None:
    engine = commands.add_parser("engine", help="build and check TensorRT/ONNX Runtime engines",
                                 description="Build a TensorRT engine for this GPU and TensorRT version, or check an engine's parity and speed.")
    sub = engine.add_subparsers(dest="engine_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build", help="build ARTIFACT/engines/<trt-version>/sm<XY>/model.plan",
        description="Build with an optimisation profile over the dynamic batch (1 … --max-batch, tuned for --opt-batch), through "
        "the TensorRT Python API or trtexec. FP16 on TensorRT 10 uses BuilderFlag.FP16; on TensorRT 11 (strongly typed) it "
        "builds from model.fp16.onnx (framewatch export --fp16). Needs an NVIDIA GPU, TensorRT 10.0+ and cuda-python.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    build.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR")
    build.add_argument("--max-batch", type=int, default=64)
    build.add_argument("--opt-batch", type=int, default=32)
    build.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    build.add_argument("--workspace-mb", type=int, default=2048)
    build.add_argument("--timing-cache", type=Path, default=None, help="reuse and update a timing cache file")
    build.add_argument("--use-trtexec", action="store_true", help="run trtexec (printed and stored in build.json)")
    build.add_argument("--trtexec", default=None, help="path to trtexec (default: from PATH)")
    build.set_defaults(handler=_build)
    check = sub.add_parser("check", help="parity with ONNX Runtime CPU and throughput by batch size",
                           description="Run the engine on frames of the training data (or random pixels) and compare with ONNX Runtime on the CPU.")
    check.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR")
    check.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto")
    check.add_argument("--tolerance", type=float, default=1e-2, help="exit 1 when max |Δp| exceeds this (FP16 engines differ ~1e-3)")
    check.set_defaults(handler=_check)

    be = bench_commands.add_parser("engine", help="framewatch engine vs a bare onnxruntime session",
                              description="Images/s at batch 1, 8 and 32 of the framewatch engine and of a bare onnxruntime.InferenceSession "
                              "on the same model.onnx, measured interleaved in one run, and their ratio (the wrapper's overhead).")
    be.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR")
    be.add_argument("--json", type=Path, required=True, help="output file")
    be.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    be.add_argument("--rounds", type=int, default=7)
    be.set_defaults(handler=_bench_engine)
