"""`framewatch bench …`: benchmarks that write JSON. They live in framewatch.benchmarks, beside the
product; an image without them (the worker's) says so instead of failing on an import."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from framewatch.cli.settings import settings_from_args
from framewatch.errors import FrameWatchError


class BenchmarksMissing(FrameWatchError):
    """This installation carries no framewatch.benchmarks (the worker image leaves them out)."""


def _benchmarks() -> None:
    import importlib.util

    if importlib.util.find_spec("framewatch.benchmarks") is None:
        raise BenchmarksMissing("the benchmarks are not installed here (the worker image leaves them out); "
                                "run them from a full install: pip install 'framewatch[worker,train]'")


def _bench_settings(args: argparse.Namespace) -> Any:
    return settings_from_args(args, backend=args.backend, batch={"max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms},
                              decode={"workers": args.decode_workers})


def _workload(args: argparse.Namespace) -> Any:
    from framewatch.benchmarks.pipeline import Workload

    return Workload(streams=args.streams, width=args.width, height=args.height, fps=args.fps, segment_seconds=args.segment_seconds,
                    grain=args.grain)


def _bench_pipeline(args: argparse.Namespace) -> int:
    _benchmarks()
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from framewatch.benchmarks.pipeline import PipelineOptions, bench_pipeline

    console = Console()
    options = PipelineOptions(model=args.model, json_out=args.json, streams=args.streams, seconds=args.seconds, backend=args.backend or "auto",
                              profile=args.profile, workload=_workload(args), progress=lambda text: console.print(f"[dim]· {escape(text)}"),
                              policies=tuple(args.policies), peer=not args.no_peer, naive=args.naive, max_backlog_segments=args.max_backlog,
                              evidence_repeats=args.evidence_repeats)
    result = bench_pipeline(options, _bench_settings(args))
    table = Table(title=f"framewatch bench pipeline: {result['model']['name']} on {result['backend']}, {result['machine']['cores']} cores, "
                        f"infer alone {result['infer_fps']:.0f} frames/s")
    for column in ("policy", "decode alone", "e2e", "e2e / bound", "peer (ffmpeg)", "e2e / peer", "streams/core", "p50 / p99 latency ms",
                   "RSS MiB", "detection delay s"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name, row in result["policies"].items():
        d = row["derived"]
        table.add_row(name, f"{row['decode_fps']:.1f}", f"{row['e2e_fps']:.1f}", f"{d['e2e_over_bound']:.2f}",
                      f"{row['peer_fps']:.1f}" if row["peer_fps"] else "—", f"{d['e2e_over_peer']:.2f}" if d["e2e_over_peer"] else "—",
                      f"{row['streams_per_core']:.1f}", f"{row['p50_latency_ms']:.0f} / {row['p99_latency_ms']:.0f}", f"{row['rss_mb']:.0f}",
                      f"{row['detection_delay_s']['mean_s']}")
    console.print(table)
    if result.get("evidence"):
        ev = result["evidence"]
        console.print(f"evidence ({ev['policy']}): off {ev['off_fps']} frames/s, on {ev['on_fps']} frames/s → on/off {ev['on_over_off']:.3f}")
    for goal, met in result["goals"].items():
        console.print(f"{'✓' if met else '✗'} {goal}")
    console.print(f"wrote {args.json} and {args.json.with_suffix('.png')}")
    return 0


def _bench_soak(args: argparse.Namespace) -> int:
    _benchmarks()
    from rich.console import Console
    from rich.markup import escape

    from framewatch.benchmarks.soak import SoakOptions, bench_soak

    console = Console()
    options = SoakOptions(model=args.model, json_out=args.json, minutes=args.minutes, load_fraction=args.load, saturated_fps=args.saturated_fps,
                          streams=args.streams, warmup_minutes=args.warmup_minutes, backend=args.backend or "auto", workload=_workload(args),
                          progress=lambda text: console.print(f"[dim]· {escape(text)}"))
    result = bench_soak(options, _bench_settings(args))
    console.print(f"p50 {result['p50_latency_ms']:.0f} ms, p99 {result['p99_latency_ms']:.0f} ms; RSS after warm-up {result['rss_mb_after_warmup']:.0f} MiB "
                  f"→ {result['rss_mb_final']:.0f} MiB ({result['rss_growth_after_warmup']:+.1%}; goal < +10 %: "
                  f"{'met' if result['goal_rss_growth_below_10_percent'] else 'NOT met'})")
    console.print(f"wrote {args.json} and {args.json.with_suffix('.png')}")
    return 0


def _add_bench_flags(parser: argparse.ArgumentParser) -> None:
    # No broker or Redis flags: a benchmark starts its own embedded pair, so its numbers are
    # comparable between runs. Batch and decode settings come from --config / FRAMEWATCH_* / flags.
    parser.add_argument("--model", type=Path, required=True, metavar="ARTIFACT_DIR", help="model artifact folder (framewatch export)")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="JSON output; a PNG plot is written beside it")
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams (and topic partitions)")
    parser.add_argument("--backend", default=None, help="auto, onnxruntime, tensorrt or a plugin backend (default auto)")
    parser.add_argument("--max-batch", type=int, help="worker max batch (default from the config: 32)")
    parser.add_argument("--max-delay-ms", type=float, help="worker batch delay (default from the config: 50)")
    parser.add_argument("--decode-workers", type=int, help="decode processes (default from the config: 2)")
    parser.add_argument("--width", type=int, default=1280, help="segment frame width")
    parser.add_argument("--height", type=int, default=720, help="segment frame height")
    parser.add_argument("--fps", type=float, default=30.0, help="segment frame rate")
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--grain", type=float, default=6.0, help="σ of per-frame noise; 6 gives ~5 Mbps at 720p30, like camera video")
    parser.add_argument("--config", type=Path, help="YAML or TOML settings file (batch and decode sections are used)")


def _bench_engine(args: argparse.Namespace) -> int:
    _benchmarks()
    from rich.console import Console
    from rich.table import Table

    from framewatch.benchmarks.engine import bench_engine

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


def _bench_train(args: argparse.Namespace) -> int:
    _benchmarks()
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from framewatch.benchmarks.training import bench_train

    if args.data is not None and not (args.data / "train" / "metadata.jsonl").exists():
        raise FrameWatchError(f"--data {args.data} is not an imagefolder data set with a train split (train/metadata.jsonl)")
    console = Console()
    result = bench_train(args.images, args.image_size, args.image_encoder, args.data, args.steps, args.warmup, args.batch_size,
                         args.workers, tuple(args.paths), progress=lambda text: console.print(f"[dim]· {escape(text)}"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"framewatch bench train: {args.images} frames at {args.image_size} px, {args.image_encoder}")
    for column in ("path", "first step, s", "images/s", "peak RSS, MiB", "loader RSS, MiB"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for path in args.paths:
        row = result.get(path, {})
        if "images_per_second" in row:
            table.add_row(path, f"{row['first_step_seconds']:.1f}", f"{row['images_per_second'] or 0:.1f}", f"{row['peak_rss_mb']:.0f}",
                          f"{row['loader_rss_mb']:.0f}")
        else:
            table.add_row(path, row.get("skipped") or "failed: " + str(row.get("failed", ""))[-200:], "", "", "")
    console.print(table)
    print(f"wrote {args.json}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks that write JSON", description="Benchmarks; each writes JSON and prints a table.")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    bp = bench_commands.add_parser(
        "pipeline", help="worker throughput, latency and streams per core per sampling policy, vs its stages alone and an ffmpeg peer",
        description="Start the embedded broker and Redis, encode real H.264 segments and measure in one run, for each sampling policy "
        "(grid, keyframes, adaptive): decode_fps (decode pool alone), e2e_fps (the worker process, Kafka backlog to Redis with commits), "
        "peer_fps (ffmpeg subprocesses feeding the same engine and Redis, benchmarks/ffmpeg_peer.py), streams per core, p50/p99 latency "
        "from production to the last score in Redis at half the saturated rate, the worker's RSS and the detection delay; and infer_fps "
        "(engine alone, by batch size). Prints a table, writes OUT and a plot (OUT with .png).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_bench_flags(bp)
    bp.add_argument("--seconds", type=float, default=30.0, help="length of each measured phase")
    bp.add_argument("--profile", type=Path, default=None, help="py-spy profile of the worker at saturation (.svg flame graph or .json speedscope)")
    bp.add_argument("--policies", nargs="+", choices=["grid", "keyframes", "adaptive"], default=["grid", "keyframes", "adaptive"],
                    help="sampling policies to measure, one after the other")
    bp.add_argument("--no-peer", action="store_true", help="skip the ffmpeg-subprocess peer")
    bp.add_argument("--naive", action="store_true", help="also run the naive worker (grid only), the first round's yardstick")
    bp.add_argument("--max-backlog", type=int, default=1200, help="segments in a policy's backlog at most (the broker stores them all)")
    bp.add_argument("--evidence-repeats", type=int, default=2,
                    help="evidence off/on pairs on the default policy: the cost of evidence as on/off throughput (0 = skip)")
    bp.set_defaults(handler=_bench_pipeline)
    bs = bench_commands.add_parser(
        "soak", help="the worker at a steady fraction of its saturated rate: RSS and latency over time",
        description="Run the worker for --minutes at --load of its saturated rate (measured first unless --saturated-fps is given) "
        "and report RSS and latency per minute, and RSS growth after the warm-up. Writes OUT and a plot (OUT with .png).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_bench_flags(bs)
    bs.add_argument("--minutes", type=float, default=20.0)
    bs.add_argument("--load", type=float, default=0.7, help="fraction of the saturated rate")
    bs.add_argument("--saturated-fps", type=float, default=None, help="skip the saturation measurement (e2e_fps of bench pipeline)")
    bs.add_argument("--warmup-minutes", type=float, default=2.0)
    bs.set_defaults(handler=_bench_soak)

    be = bench_commands.add_parser("engine", help="framewatch engine vs a bare onnxruntime session",
                              description="Images/s at batch 1, 8 and 32 of the framewatch engine and of a bare onnxruntime.InferenceSession "
                              "on the same model.onnx, measured interleaved in one run, and their ratio (the wrapper's overhead).")
    be.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR")
    be.add_argument("--json", type=Path, required=True, help="output file")
    be.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    be.add_argument("--rounds", type=int, default=7)
    be.set_defaults(handler=_bench_engine)

    bt = bench_commands.add_parser(
        "train", help="the training data paths: streamed vs in memory (RSS, images/s, time to first step)",
        description="Write a synthetic set of --images frames (or use --data), then train the image classifier for --steps steps "
        "once per data path, each in its own process: streamed (decoded per batch by loader processes) and in memory "
        "(decoded once first; skipped when it would not fit). Reports peak RSS of the training process, the loader processes' "
        "RSS, steady-state images/s and time to first step.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bt.add_argument("--images", type=int, default=2000, help="synthetic frames to write (ignored with --data)")
    bt.add_argument("--image-size", type=int, default=224)
    bt.add_argument("--image-encoder", default="efficientnet_lite0")
    bt.add_argument("--data", type=Path, default=None, help="an existing data set (its train split) instead of a synthetic one")
    bt.add_argument("--steps", type=int, default=30)
    bt.add_argument("--warmup", type=int, default=5, help="steps left out of images/s")
    bt.add_argument("--batch-size", type=int, default=16, help="the default recipe's")
    bt.add_argument("--workers", type=int, default=None, help="loader processes (default: cores less one, 1 to 4)")
    bt.add_argument("--paths", nargs="+", choices=["streamed", "memory"], default=["streamed", "memory"])
    bt.add_argument("--json", type=Path, required=True, help="output file")
    bt.set_defaults(handler=_bench_train)
