"""Command-line front of the worker: `worker`, `produce`, `scores`. Never imports torch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _worker(args: argparse.Namespace) -> int:
    from framewatch.cli import settings_from_args
    from framewatch.logs import configure_logging
    from worker.service import run_worker

    settings = settings_from_args(
        args, model=args.model, backend=args.backend, metrics_port=args.metrics_port,
        kafka={"topic": args.topic, "group": args.group},
        batch={"max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms},
        decode={"workers": args.decode_workers, "sample_fps": args.sample_fps, "keyframes_only": args.keyframes_only or None},
    )
    configure_logging(settings.log_level, settings.log_format)
    return run_worker(settings)


def _produce(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from framewatch.cli import settings_from_args
    from worker.produce import produce_file

    settings = settings_from_args(args, kafka={"topic": args.topic})
    if not args.video.exists():
        print(f"framewatch produce: {args.video} does not exist", file=sys.stderr)
        return 2
    start_ms = _produce_start(args, settings)
    producer = KafkaProducer(acks="all", max_request_size=settings.decode.max_message_bytes, **settings.kafka.client_kwargs())
    try:
        sent = produce_file(producer, settings.kafka.topic, args.video, args.stream_id, args.segment_seconds, args.format,
                            args.loop, args.realtime, args.max_segments, verbose=not args.quiet, start_ms=start_ms,
                            broadcast_id=args.broadcast_id)
    finally:
        producer.close()
    print(f"sent {sent} segments of {args.video} as stream {args.stream_id!r} to {settings.kafka.topic}", file=sys.stderr)
    return 0


def _produce_start(args: argparse.Namespace, settings: Any) -> int:
    """Where the stream time of this run starts, said on stderr."""
    import time

    if args.start == "wall-clock":
        start = int(time.time() * 1000)
        print(f"stream time starts at the wall clock ({start} ms since the epoch)", file=sys.stderr)
        return start
    if args.start == "continue":
        from worker.redis_io import Scores, connect

        state = Scores(connect(settings.redis), settings.redis.prefix).get(args.stream_id) or {}
        end = state.get("end_ms") if isinstance(state.get("end_ms"), int) else state.get("pts_ms")
        start = int(end) + 1 if isinstance(end, int) else 0
        where = f"after the stream's last scored time in Redis ({start} ms)" if state else "at 0 (the stream has no scores in Redis)"
        print(f"stream time continues {where}", file=sys.stderr)
        return start
    print("stream time starts at 0: the worker sees a new broadcast if the stream was already further on "
          "(--start continue or wall-clock to go on instead)", file=sys.stderr)
    return 0


def _scores_client(args: argparse.Namespace) -> Any:
    from framewatch.cli import settings_from_args
    from worker.redis_io import Scores, connect

    settings = settings_from_args(args)
    return Scores(connect(settings.redis), settings.redis.prefix, stale_after_s=settings.scoring.stale_after_s,
                  socket_timeout_s=settings.redis.socket_timeout_s)


def _scores_get(args: argparse.Namespace) -> int:
    state = _scores_client(args).get(args.stream_id)
    if state is None:
        print(f"no scores for stream {args.stream_id!r} (never scored, or expired)", file=sys.stderr)
        return 1
    print(json.dumps(state, indent=2))
    return 0


def _scores_history(args: argparse.Namespace) -> int:
    for row in _scores_client(args).history(args.stream_id, args.last):
        print(json.dumps(row))
    return 0


def _scores_top(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = _scores_client(args).top(args.n, include_stale=args.include_stale)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    title = "riskiest streams now (by EMA)" + (", stale ones included" if args.include_stale else "")
    table = Table(title=title)
    for column in ("stream", "ema", "score", "max_recent", "frames", "alert", "pts_ms", "updated"):
        table.add_column(column, justify="left" if column == "stream" else "right")

    def number(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value or "")

    for row in rows:
        state = "ALERT" if row.get("alert") == 1 else ""
        age = f"{row['age_s']:.0f} s ago" if "age_s" in row else ""
        if row.get("stale"):
            state, age = f"{state} (stale)".strip(), f"{age}, stale"
        table.add_row(row["stream"], number(row.get("ema")), number(row.get("score")), number(row.get("max_recent")),
                      str(row.get("frames", "")), state, str(row.get("pts_ms", "")), age)
    Console().print(table)
    return 0


def _scores_alerts(args: argparse.Namespace) -> int:
    client = _scores_client(args)
    events = client.alerts(args.last)
    # Listing and following are one read position: the follower starts after the last event
    # listed (or the newest one now), so nothing written in between is missed.
    last_id = events[-1]["id"] if events else client.last_alert_id()
    for event in events:
        print(json.dumps(event))
    if args.follow:
        # XREAD BLOCK must return before the socket times out, or a quiet minute looks like an outage.
        block_ms = max(100, min(1000, int(client.socket_timeout_s * 1000 / 2)))

        def on_error(exc: Exception, retry_in_s: float) -> None:
            print(f"framewatch scores alerts: Redis error ({exc.__class__.__name__}: {exc}); reconnecting in {retry_in_s:.1f} s",
                  file=sys.stderr, flush=True)

        try:
            for event in client.follow_alerts(after=last_id, block_ms=block_ms, on_error=on_error):
                print(json.dumps(event), flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def _bench_settings(args: argparse.Namespace) -> Any:
    from framewatch.cli import settings_from_args

    return settings_from_args(args, backend=args.backend, batch={"max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms},
                              decode={"workers": args.decode_workers})


def _workload(args: argparse.Namespace) -> Any:
    from worker.bench import Workload

    return Workload(streams=args.streams, width=args.width, height=args.height, fps=args.fps, segment_seconds=args.segment_seconds,
                    grain=args.grain)


def _bench_pipeline(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from worker.bench import PipelineOptions, bench_pipeline

    console = Console()
    options = PipelineOptions(model=args.model, json_out=args.json, streams=args.streams, seconds=args.seconds, backend=args.backend or "auto",
                              profile=args.profile, workload=_workload(args), progress=lambda text: console.print(f"[dim]· {text}"))
    from engines.manifest import ManifestError

    try:
        result = bench_pipeline(options, _bench_settings(args))
    except ManifestError as exc:
        print(f"framewatch bench pipeline: {exc}", file=sys.stderr)
        return 2
    d, g = result["derived"], result["goals"]
    table = Table(title=f"framewatch bench pipeline: {result['model']['name']} on {result['backend']}, {result['machine']['cores']} cores")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("goal")
    rows = [
        ("decode_fps (decode pool alone)", f"{result['decode_fps']:.1f}", ""),
        ("infer_fps (engine alone, max batch)", f"{result['infer_fps']:.1f}", ""),
        ("two-stage bound 1/(1/decode+1/infer)", f"{d['two_stage_bound_fps']:.1f}", ""),
        ("e2e_fps (Kafka → Redis, commits)", f"{result['e2e_fps']:.1f}", f"≥ 0.85 × bound: {d['e2e_over_bound']:.2f} {'✓' if g['e2e_at_least_0.85_of_bound'] else '✗'}"),
        ("naive_fps", f"{result['naive_fps']:.1f}", f"e2e ≥ 8 × naive: {d['e2e_over_naive'] or 0:.1f}× {'✓' if g['e2e_at_least_8x_naive'] else '✗'}"),
        ("p50 latency at half load, ms", f"{result['p50_latency_ms']:.0f}", ""),
        ("p99 latency at half load, ms", f"{result['p99_latency_ms']:.0f}",
         f"≤ {d['latency_goal_ms']:.0f} {'✓' if g['p99_within_2x_segment_plus_delay'] else '✗'}"),
        ("worker RSS, MiB (decoders apart)", f"{result['rss_mb']:.0f} ({d['decoders_rss_mb']:.0f})", ""),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"wrote {args.json} and {args.json.with_suffix('.png')}")
    return 0


def _bench_soak(args: argparse.Namespace) -> int:
    from rich.console import Console

    from worker.bench import SoakOptions, bench_soak

    console = Console()
    options = SoakOptions(model=args.model, json_out=args.json, minutes=args.minutes, load_fraction=args.load, saturated_fps=args.saturated_fps,
                          streams=args.streams, warmup_minutes=args.warmup_minutes, backend=args.backend or "auto", workload=_workload(args),
                          progress=lambda text: console.print(f"[dim]· {text}"))
    from engines.manifest import ManifestError

    try:
        result = bench_soak(options, _bench_settings(args))
    except ManifestError as exc:
        print(f"framewatch bench soak: {exc}", file=sys.stderr)
        return 2
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
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default=None)
    parser.add_argument("--max-batch", type=int, help="worker max batch (default from the config: 32)")
    parser.add_argument("--max-delay-ms", type=float, help="worker batch delay (default from the config: 50)")
    parser.add_argument("--decode-workers", type=int, help="decode processes (default from the config: 2)")
    parser.add_argument("--width", type=int, default=1280, help="segment frame width")
    parser.add_argument("--height", type=int, default=720, help="segment frame height")
    parser.add_argument("--fps", type=float, default=30.0, help="segment frame rate")
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--grain", type=float, default=6.0, help="σ of per-frame noise; 6 gives ~5 Mbps at 720p30, like camera video")
    parser.add_argument("--config", type=Path, help="YAML or TOML settings file (batch and decode sections are used)")


def register(commands: argparse._SubParsersAction, bench_commands: argparse._SubParsersAction) -> None:
    from framewatch.cli import _add_settings_flags

    bp = bench_commands.add_parser(
        "pipeline", help="worker throughput and latency vs its stages alone and vs a naive worker",
        description="Start the embedded broker and Redis, encode real H.264 segments and measure in one run: decode_fps (decode pool "
        "alone), infer_fps (engine alone at max batch), e2e_fps (the worker process, Kafka backlog to Redis with commits), naive_fps "
        "(worker/naive.py on the same backlog), p50/p99 latency from production to the last score in Redis at half the saturated rate, "
        "and the worker's RSS. Prints a table, writes OUT and a plot of throughput by batch size (OUT with .png).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_bench_flags(bp)
    bp.add_argument("--seconds", type=float, default=30.0, help="length of each measured phase")
    bp.add_argument("--profile", type=Path, default=None, help="py-spy profile of the worker at saturation (.svg flame graph or .json speedscope)")
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

    w = commands.add_parser(
        "worker", help="score Kafka video segments into Redis (runs until SIGTERM/SIGINT)",
        description="Consume segments (docs/contracts.md), decode them with PyAV, batch frames of all streams onto the engine "
        "and write scores to Redis; offsets are committed only after the writes. SIGTERM drains and leaves the group.",
    )
    w.add_argument("--model", type=Path, help="model artifact folder (framewatch export)")
    w.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], help="default auto: TensorRT if a matching engine, else ONNX Runtime")
    w.add_argument("--topic", help="input topic (default framewatch.segments)")
    w.add_argument("--group", help="consumer group (default framewatch)")
    w.add_argument("--max-batch", type=int, help="frames per inference batch (default 32)")
    w.add_argument("--max-delay-ms", type=float, help="longest wait for a batch to fill (default 50)")
    w.add_argument("--decode-workers", type=int, help="decode processes (default 2)")
    w.add_argument("--sample-fps", type=float, help="frames scored per second of stream time (default 1)")
    w.add_argument("--keyframes-only", action="store_true", help="score keyframes only, decoding nothing else")
    w.add_argument("--metrics-port", type=int, help="Prometheus and health port (default 9108, 0 = off)")
    _add_settings_flags(w)
    w.set_defaults(handler=_worker)

    p = commands.add_parser(
        "produce", help="cut a video into segments and publish them to Kafka",
        description="Re-encode VIDEO_FILE into self-contained segments (each starting on a keyframe) and publish them keyed by "
        "--stream-id with content-type and segment-start-ms headers: test traffic for the worker.",
    )
    p.add_argument("video", type=Path, metavar="VIDEO_FILE")
    p.add_argument("--stream-id", required=True)
    p.add_argument("--segment-seconds", type=float, default=2.0)
    p.add_argument("--format", choices=["mpegts", "mp4", "webm", "mkv", "flv"], default="mpegts")
    p.add_argument("--loop", action="store_true", help="repeat the video (stream time keeps increasing)")
    p.add_argument("--realtime", action="store_true", help="send one segment per segment duration, like a live source")
    p.add_argument("--max-segments", type=int, default=None, help="stop after this many segments")
    p.add_argument("--topic", help="topic (default framewatch.segments)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--start", choices=["zero", "continue", "wall-clock"], default="zero",
                   help="stream time of the first segment: 0 (default; a new broadcast if the stream already ran), continue after "
                   "the stream's last scored time in Redis, or the wall clock in epoch ms")
    p.add_argument("--broadcast-id", default=None, help="broadcast-id header: a new value starts a new broadcast of the stream")
    _add_settings_flags(p)
    p.set_defaults(handler=_produce)

    s = commands.add_parser("scores", help="look up scores in Redis", description="Read the Redis keys of docs/contracts.md.")
    sc = s.add_subparsers(dest="scores_command", metavar="ACTION", required=True)
    g = sc.add_parser("get", help="a stream's latest state (JSON)")
    g.add_argument("stream_id")
    g.set_defaults(handler=_scores_get)
    h = sc.add_parser("history", help="a stream's per-frame scores, oldest first")
    h.add_argument("stream_id")
    h.add_argument("--last", type=int, default=20)
    h.set_defaults(handler=_scores_history)
    t = sc.add_parser("top", help="the riskiest streams now, by EMA")
    t.add_argument("--n", type=int, default=10)
    t.add_argument("--json", action="store_true")
    t.add_argument("--include-stale", action="store_true", help="also streams with no frame for scoring.stale_after_s")
    t.set_defaults(handler=_scores_top)
    a = sc.add_parser("alerts", help="recent alert events; --follow waits for new ones")
    a.add_argument("--last", type=int, default=20)
    a.add_argument("--follow", action="store_true", help="then wait for new events (Ctrl-C to stop); survives quiet periods and reconnects")
    a.set_defaults(handler=_scores_alerts)
    for sub in (g, h, t, a):
        _add_settings_flags(sub)
