"""Prometheus metrics and the /metrics, /healthz, /readyz endpoints (docs/operations.md)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages = Counter("framewatch_messages_total", "Kafka messages by outcome", ["outcome"], registry=r)
        self.frames_decoded = Counter("framewatch_frames_decoded_total", "Frames decoded", registry=r)
        self.frames_sampled = Counter("framewatch_frames_sampled_total", "Frames sampled for scoring", registry=r)
        self.frames_scored = Counter("framewatch_frames_scored_total", "Frames written to Redis", registry=r)
        self.frames_replayed = Counter("framewatch_frames_replayed_total", "Replayed frames skipped (already in Redis)", registry=r)
        self.frames_skipped = Counter("framewatch_frames_skipped_total", "Sampled frames not written, by reason (replay, partition-moved, redis-rejected)",
                                      ["reason"], registry=r)
        self.frames_late = Counter("framewatch_frames_late_total", "Frames earlier than their stream's latest (written; the EMA not moved back)", registry=r)
        self.segments_truncated = Counter("framewatch_segments_truncated_total", "Segments whose video ended before their declared duration (their frames scored)", registry=r)
        self.key_mismatch = Counter("framewatch_stream_key_mismatch_total", "Messages whose stream-id header differs from their key", registry=r)
        self.state_errors = Counter("framewatch_stream_state_errors_total", "Stream hash fields that could not be read back", registry=r)
        self.streams_cached = Gauge("framewatch_streams_cached", "Streams whose state the worker holds in memory", registry=r)
        self.sampling = Counter("framewatch_sampling_messages_total", "Decoded video messages by how they were sampled (grid, keyframes)",
                                ["mode"], registry=r)
        for mode in ("grid", "keyframes"):
            self.sampling.labels(mode)
        self.hwaccel = Gauge("framewatch_decode_hwaccel", "1 when decode.hwaccel passed its start-up check on this device", ["device"], registry=r)
        self.hwaccel_messages = Counter("framewatch_decode_hwaccel_messages_total",
                                        "Messages decoded with decode.hwaccel set, by where they were decoded (device, software)", ["where"], registry=r)
        self.decoder_crashes = Counter("framewatch_decoder_crashes_total", "Decode pool crashes (the pool is rebuilt)", registry=r)
        self.decode_kills = Counter("framewatch_decode_timeouts_killed_total", "Decodes killed for running past their time limit", registry=r)
        self.unreadable_records = Counter("framewatch_unreadable_records_total", "Kafka records the client could not parse (skipped)", registry=r)
        self.dlq_envelopes = Counter("framewatch_dlq_trimmed_total", "Dead letters too large for the DLQ, written as a trimmed envelope", registry=r)
        self.thread_deaths = Counter("framewatch_thread_deaths_total", "Worker threads that died of an unexpected exception", ["thread"], registry=r)
        self.dlq = Counter("framewatch_dlq_total", "Messages sent to the dead-letter topic", ["error_type"], registry=r)
        self.redis_errors = Counter("framewatch_redis_errors_total", "Failed Redis writes (retried)", registry=r)
        self.alerts = Counter("framewatch_alerts_total", "Alert events", ["event"], registry=r)
        self.evidence_written = Counter("framewatch_evidence_written_total", "Evidence frames stored, by kind (trigger, best, near-miss)",
                                        ["kind"], registry=r)
        self.evidence_failed = Counter("framewatch_evidence_failed_total", "Evidence frames not stored, by reason (budget, error, no-frame)",
                                       ["reason"], registry=r)
        self.near_misses = Counter("framewatch_near_misses_total", "Near misses queued for review", registry=r)
        self.commits = Counter("framewatch_commits_total", "Offset commits", registry=r)
        self.batch_size = Histogram("framewatch_batch_size", "Frames per inference batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.decode_seconds = Histogram("framewatch_decode_seconds", "Decode time per message", buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("framewatch_inference_seconds", "Engine time per batch", buckets=LATENCY_BUCKETS, registry=r)
        self.e2e_seconds = Histogram("framewatch_end_to_end_seconds", "Production (produced-at-ms) to Redis write", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("framewatch_queue_depth", "Items waiting per stage", ["stage"], registry=r)
        self.lag = Gauge("framewatch_consumer_lag", "High watermark minus position", ["topic", "partition"], registry=r)
        self.paused = Gauge("framewatch_partitions_paused", "1 while backpressure pauses the partitions", registry=r)
        self.assigned = Gauge("framewatch_partitions_assigned", "Partitions assigned to this worker", registry=r)
        self.ready = Gauge("framewatch_ready", "1 when assigned, connected and Redis writes succeed", registry=r)


class Health:
    """Liveness: the main loop and every registered thread beat recently, and nothing was fatal.
    Readiness: set by the worker loop."""

    def __init__(self, stall_seconds: float = 60.0, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.last_tick = clock()
        self.beats: dict[str, float] = {}
        self.ready = False
        self.reason = "starting"
        self.stall_seconds = stall_seconds
        self.fatal: str | None = None

    def tick(self) -> None:
        self.last_tick = self.clock()

    def beat(self, thread: str) -> None:
        self.beats[thread] = self.clock()

    def problem(self) -> str | None:
        """Why the process is not alive, or None."""
        if self.fatal is not None:
            return self.fatal
        now = self.clock()
        if now - self.last_tick >= self.stall_seconds:
            return f"main loop stalled for {now - self.last_tick:.0f} s"
        for thread, at in self.beats.items():
            if now - at >= self.stall_seconds:
                return f"{thread} thread stalled for {now - at:.0f} s"
        return None

    def alive(self) -> bool:
        return self.problem() is None


def serve(metrics: WorkerMetrics, health: Health, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                problem = health.problem()
                self._send(200 if problem is None else 503, b"ok\n" if problem is None else f"{problem}\n".encode())
            elif self.path.startswith("/readyz"):
                self._send(200 if health.ready else 503, f"{'ready' if health.ready else 'not ready'}: {health.reason}\n".encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
