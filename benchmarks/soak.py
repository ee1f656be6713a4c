"""`framewatch bench soak`: the worker at a steady fraction of its saturated rate for minutes,
with RSS and latency per minute and RSS growth after the warm-up. The workload and the worker
harness are the pipeline benchmark's (framewatch.benchmarks.pipeline)."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaProducer

from framewatch.benchmarks.pipeline import (
    PacedResult,
    Workload,
    decode_request_factory,
    make_segments,
    percentile,
    process_memory,
    produce_backlog,
    run_paced,
    watch_until,
    worker_env,
)
from framewatch.benchmarks.traffic import Sandbox, WorkerProcess
from framewatch.config import FrameWatchSettings
from framewatch.engines import load
from framewatch.machine import describe, pyplot


@dataclass
class SoakOptions:
    model: Path
    json_out: Path
    minutes: float = 20.0
    load_fraction: float = 0.7
    saturated_fps: float | None = None  # measured first when not given
    streams: int = 8
    warmup_minutes: float = 2.0
    backend: str = "auto"
    workload: Workload = field(default_factory=Workload)
    progress: Callable[[str], None] = print


def bench_soak(options: SoakOptions, settings: FrameWatchSettings) -> dict[str, Any]:
    from framewatch.devservices import running_services

    say = options.progress
    w = options.workload
    engine = load(options.model, options.backend, intra_op_threads=settings.intra_op_threads)
    request = decode_request_factory(settings, engine, round(w.segment_seconds * 1000))
    segments = make_segments(w, request)
    per_segment = statistics.mean(s.sampled for s in segments)
    segment_ms = round(w.segment_seconds * 1000)
    del engine  # the worker process loads its own
    log_dir = options.json_out.parent / f"{options.json_out.stem}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with running_services() as services:
        sandbox = Sandbox(services.kafka_bootstrap, services.redis_url, partitions=options.streams)
        sandbox.create_topics()
        client = redis.Redis.from_url(services.redis_url)
        producer = KafkaProducer(bootstrap_servers=sandbox.bootstrap, acks="all", linger_ms=5, max_request_size=settings.decode.max_message_bytes)
        worker = WorkerProcess(sandbox, options.model, log_dir / "worker.log", extra_env=worker_env(settings))
        try:
            saturated = options.saturated_fps
            if saturated is None:
                streams = [f"saturate-{i}" for i in range(options.streams)]
                count = max(4 * options.streams, 40)
                say(f"measuring the saturated rate on a backlog of {count} segments")
                total = produce_backlog(producer, sandbox, segments, streams, count, segment_ms)
                saturated = watch_until(client, sandbox, streams, total, worker.process.pid, timeout_s=600)[0].rate_between(total)
            rate = options.load_fraction * saturated / max(per_segment, 1)
            say(f"soak: {options.minutes:g} min at {options.load_fraction:.0%} of {saturated:.1f} frames/s ({rate:.2f} segments/s)")
            started = time.monotonic()
            minutes_said = [0]

            def tick(now: float) -> None:
                minute = int((now - started) // 60)
                if minute > minutes_said[0]:
                    minutes_said[0] = minute
                    rss, children = process_memory(worker.process.pid)
                    say(f"  {minute} min: worker RSS {rss:.0f} MiB, decode processes {children:.0f} MiB")

            paced = run_paced(producer, client, sandbox, segments, [f"soak-{i}" for i in range(options.streams)], rate, options.minutes * 60,
                              worker.process.pid, segment_ms, on_tick=tick, memory_every_s=10.0)
        finally:
            exit_code = worker.stop()
            producer.close()
            client.close()
    return soak_report(options, settings, paced, started, saturated, rate, per_segment, exit_code)


def soak_report(options: SoakOptions, settings: FrameWatchSettings, paced: PacedResult, started: float, saturated: float,
                rate: float, per_segment: float, exit_code: int) -> dict[str, Any]:
    minute_rows = []
    for minute in range(math.ceil(options.minutes)):
        lo, hi = started + minute * 60, started + (minute + 1) * 60
        lat = [lt for lt, t in zip(paced.latencies_ms, paced.produced_at, strict=True) if lo <= t < hi]
        rss = [(r, c) for t, r, c in paced.rss if lo <= t < hi]
        minute_rows.append({"minute": minute + 1, "segments": len(lat), "p50_latency_ms": round(percentile(lat, 50), 1),
                            "p99_latency_ms": round(percentile(lat, 99), 1),
                            "rss_mb": round(max((r for r, _ in rss), default=0.0), 1),
                            "decoders_rss_mb": round(max((c for _, c in rss), default=0.0), 1)})
    warm = [r for t, r, _ in paced.rss if t - started >= options.warmup_minutes * 60]
    after_warmup = warm[0] if warm else float("nan")
    final = warm[-1] if warm else float("nan")
    growth = (final - after_warmup) / after_warmup if warm else float("nan")
    result: dict[str, Any] = {
        "minutes": options.minutes,
        "load_fraction": options.load_fraction,
        "saturated_fps": round(saturated, 2),
        "segments_per_second": round(rate, 3),
        "frames_per_second": round(rate * per_segment, 2),
        "p50_latency_ms": round(percentile(paced.latencies_ms, 50), 1),
        "p99_latency_ms": round(percentile(paced.latencies_ms, 99), 1),
        "segments_timed": len(paced.latencies_ms),
        "segments_unfinished": paced.unfinished,
        "rss_mb_after_warmup": round(after_warmup, 1),
        "rss_mb_final": round(final, 1),
        "rss_growth_after_warmup": round(growth, 4),
        "goal_rss_growth_below_10_percent": bool(growth < 0.10),
        "warmup_minutes": options.warmup_minutes,
        "per_minute": minute_rows,
        "rss_series": [{"t_s": round(t - started, 1), "rss_mb": round(r, 1), "decoders_rss_mb": round(c, 1)} for t, r, c in paced.rss],
        "machine": describe(),
        "batch": {"max_batch": settings.batch.max_batch, "max_delay_ms": settings.batch.max_delay_ms, "decode_workers": settings.decode.workers},
        "workload": {**asdict(options.workload), "streams": options.streams},
        "worker_exit_code": exit_code,
    }
    options.json_out.parent.mkdir(parents=True, exist_ok=True)
    options.json_out.write_text(json.dumps(result, indent=2) + "\n")
    plot_soak(result, options.json_out.with_suffix(".png"))
    return result


def plot_soak(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    series = result["rss_series"]
    top.plot([p["t_s"] / 60 for p in series], [p["rss_mb"] for p in series], label="worker RSS")
    top.plot([p["t_s"] / 60 for p in series], [p["decoders_rss_mb"] for p in series], label="decode processes RSS")
    top.axvline(result["warmup_minutes"], color="grey", linestyle=":", label="end of warm-up")
    top.set_ylabel("MiB")
    top.legend(fontsize=8)
    rows = result["per_minute"]
    bottom.plot([r["minute"] - 0.5 for r in rows], [r["p50_latency_ms"] for r in rows], marker="o", label="p50")
    bottom.plot([r["minute"] - 0.5 for r in rows], [r["p99_latency_ms"] for r in rows], marker="o", label="p99")
    bottom.set_ylabel("latency, ms")
    bottom.set_xlabel("minutes")
    bottom.legend(fontsize=8)
    fig.suptitle(f"soak at {result['load_fraction']:.0%} of saturation: RSS growth after warm-up {result['rss_growth_after_warmup']:+.1%}")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
