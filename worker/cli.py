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
    producer = KafkaProducer(acks="all", max_request_size=settings.decode.max_message_bytes, **settings.kafka.client_kwargs())
    try:
        sent = produce_file(producer, settings.kafka.topic, args.video, args.stream_id, args.segment_seconds, args.format,
                            args.loop, args.realtime, args.max_segments, verbose=not args.quiet)
    finally:
        producer.close()
    print(f"sent {sent} segments of {args.video} as stream {args.stream_id!r} to {settings.kafka.topic}", file=sys.stderr)
    return 0


def _scores_client(args: argparse.Namespace) -> Any:
    from framewatch.cli import settings_from_args
    from worker.redis_io import Scores, connect

    settings = settings_from_args(args)
    return Scores(connect(settings.redis), settings.redis.prefix)


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

    rows = _scores_client(args).top(args.n)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="riskiest streams now (by EMA)")
    for column in ("stream", "ema", "score", "max_recent", "frames", "alert", "pts_ms"):
        table.add_column(column, justify="left" if column == "stream" else "right")
    for row in rows:
        table.add_row(row["stream"], f"{row.get('ema', 0):.3f}", f"{row.get('score', 0):.3f}", f"{row.get('max_recent', 0):.3f}",
                      str(row.get("frames", "")), "ALERT" if row.get("alert") == 1 else "", str(row.get("pts_ms", "")))
    Console().print(table)
    return 0


def _scores_alerts(args: argparse.Namespace) -> int:
    client = _scores_client(args)
    for event in client.alerts(args.last):
        print(json.dumps(event))
    if args.follow:
        try:
            for event in client.follow_alerts():
                print(json.dumps(event), flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from framewatch.cli import _add_settings_flags

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
    t.set_defaults(handler=_scores_top)
    a = sc.add_parser("alerts", help="recent alert events; --follow waits for new ones")
    a.add_argument("--last", type=int, default=20)
    a.add_argument("--follow", action="store_true")
    a.set_defaults(handler=_scores_alerts)
    for sub in (g, h, t, a):
        _add_settings_flags(sub)
