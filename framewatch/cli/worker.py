"""`framewatch worker`, `produce` and `scores`: the worker side's commands. Never imports torch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from framewatch.cli.settings import add_settings_flags, settings_from_args


def _worker(args: argparse.Namespace) -> int:
    from framewatch.logs import configure_logging
    from framewatch.worker.service import run_worker

    settings = settings_from_args(
        args, model=args.model, backend=args.backend, metrics_port=args.metrics_port,
        kafka={"topic": args.topic, "group": args.group},
        batch={"max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms},
        decode={"workers": args.decode_workers, "sample_fps": args.sample_fps, "policy": args.policy or ("keyframes" if args.keyframes_only else None)},
    )
    configure_logging(settings.log_level, settings.log_format)
    return run_worker(settings)


def _produce(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from framewatch.worker.produce import produce_file

    settings = settings_from_args(args, kafka={"topic": args.topic})
    if not args.video.exists():
        print(f"framewatch produce: {args.video} does not exist", file=sys.stderr)
        return 2
    start_ms = _produce_start(args, settings)
    producer = KafkaProducer(acks="all", max_request_size=settings.decode.max_message_bytes, **settings.kafka.client_kwargs())
    try:
        sent = produce_file(producer, settings.kafka.topic, args.video, args.stream_id, args.segment_seconds, args.format,
                            args.loop, args.realtime, args.max_segments, verbose=not args.quiet, start_ms=start_ms,
                            broadcast_id=args.broadcast_id, metadata=_metadata(args))
    finally:
        producer.close()
    print(f"sent {sent} segments of {args.video} as stream {args.stream_id!r} to {settings.kafka.topic}", file=sys.stderr)
    return 0


def _metadata(args: argparse.Namespace) -> dict[str, str]:
    from framewatch.worker import contracts

    given = {contracts.HEADER_STREAM_TITLE: args.title, contracts.HEADER_STREAM_CATEGORY: args.category, contracts.HEADER_CAPTION: args.caption}
    return {name: text for name, text in given.items() if text}


def _produce_start(args: argparse.Namespace, settings: Any) -> int:
    """Where the stream time of this run starts, said on stderr."""
    import time

    if args.start == "wall-clock":
        start = int(time.time() * 1000)
        print(f"stream time starts at the wall clock ({start} ms since the epoch)", file=sys.stderr)
        return start
    if args.start == "continue":
        from framewatch.worker.redis_io import Scores, connect

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
    from framewatch.worker.redis_io import Scores, connect

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


def register(commands: argparse._SubParsersAction) -> None:
    w = commands.add_parser(
        "worker", help="score Kafka video segments into Redis (runs until SIGTERM/SIGINT)",
        description="Consume segments (docs/contracts.md), decode them with PyAV, batch frames of all streams onto the engine "
        "and write scores to Redis; offsets are committed only after the writes. SIGTERM drains and leaves the group.",
    )
    w.add_argument("--model", type=Path, help="model artifact folder (framewatch export)")
    w.add_argument("--backend", help="auto (default: TensorRT if a matching engine, else ONNX Runtime), onnxruntime, tensorrt, or a plugin backend")
    w.add_argument("--topic", help="input topic (default framewatch.segments)")
    w.add_argument("--group", help="consumer group (default framewatch)")
    w.add_argument("--max-batch", type=int, help="frames per inference batch (default 32)")
    w.add_argument("--max-delay-ms", type=float, help="longest wait for a batch to fill (default 50)")
    w.add_argument("--decode-workers", type=int, help="decode processes (default 2)")
    w.add_argument("--sample-fps", type=float, help="frames scored per second of stream time (default 1)")
    w.add_argument("--policy", choices=["grid", "keyframes", "adaptive"], default=None,
                   help="sampling: grid (every 1/sample-fps s), keyframes (key frames only, decoded alone), adaptive (keyframes while "
                   "a stream is calm, the grid while its EMA is at or above decode.watch_on); default grid")
    w.add_argument("--keyframes-only", action="store_true", help="the same as --policy keyframes")
    w.add_argument("--metrics-port", type=int, help="Prometheus and health port (default 9108, 0 = off)")
    add_settings_flags(w)
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
    p.add_argument("--title", default=None, help="stream-title header: kept with alert evidence as training text, never scored")
    p.add_argument("--category", default=None, help="stream-category header (as --title)")
    p.add_argument("--caption", default=None, help="caption header: the whole training text at once (wins over --title/--category)")
    add_settings_flags(p)
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
        add_settings_flags(sub)
