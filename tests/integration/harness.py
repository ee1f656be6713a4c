"""Helpers for tests that run the real worker process against the real broker and Redis."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer

from framewatch.benchmarks import traffic as _traffic
from framewatch.benchmarks.traffic import Sandbox, committed_offsets, end_offsets
from framewatch.devservices import ServiceProcess, start_redis
from framewatch.worker.contracts import segment_headers
from framewatch.worker.media import encode_image, encode_segment

__all__ = ["Sandbox", "WorkerProcess", "committed_offsets", "end_offsets"]


class WorkerProcess(_traffic.WorkerProcess):
    """The tests' worker runs beside a torch that cannot be imported: proof that it never needs torch."""

    def __init__(self, sandbox: Sandbox, model: Path, log_path: Path, block_torch: bool = True, **env: str) -> None:
        super().__init__(sandbox, model, log_path, block_torch, **env)


def clip(seed: int, violent: bool, frames: int = 20, size: int = 64) -> list[np.ndarray]:
    from framewatch.training.synth import render_clip

    return render_clip(seed, size, int(violent), frames)


def producer(sandbox: Sandbox) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=sandbox.bootstrap, acks="all", max_request_size=32 * 1024 * 1024)


def send_segment(prod: KafkaProducer, sandbox: Sandbox, stream: str, frames: list[np.ndarray], start_ms: int, fmt: str = "mpegts",
                 fps: float = 10.0, with_content_type: bool = True) -> None:
    payload, content_type = encode_segment(frames, fps, fmt)
    headers = segment_headers(content_type, segment_start_ms=start_ms, produced_at_ms=int(time.time() * 1000),
                              segment_duration_ms=round(len(frames) / fps * 1000))
    if not with_content_type:
        headers = [h for h in headers if h[0] != "content-type"]
    prod.send(sandbox.topic, key=stream.encode(), value=payload, headers=headers)


def send_image(prod: KafkaProducer, sandbox: Sandbox, stream: str, pixels: np.ndarray, fmt: str, start_ms: int) -> None:
    payload, content_type = encode_image(pixels, fmt)
    prod.send(sandbox.topic, key=stream.encode(), value=payload, headers=segment_headers(content_type, segment_start_ms=start_ms))


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def offsets_report(sandbox: Sandbox) -> str:
    return f"committed {committed_offsets(sandbox)} vs end {end_offsets(sandbox)}"


def history_pts(client: redis.Redis, sandbox: Sandbox, stream: str) -> list[int]:
    entries: Any = client.xrange(sandbox.keys.history(stream))
    return [int(fields[b"pts_ms"]) for _, fields in entries]


def read_dlq(sandbox: Sandbox, expected: int, timeout_s: float = 15) -> list[Any]:
    consumer = KafkaConsumer(sandbox.dlq, bootstrap_servers=sandbox.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=int(timeout_s * 1000))
    records = []
    try:
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
    finally:
        consumer.close(autocommit=False)
    return records


def cluster_port() -> int:
    """A free port below 55535: a Valkey cluster node also listens on port + 10000."""
    for _ in range(200):
        port = random.randint(20_000, 50_000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def start_cluster(root: Path, masters: int = 3) -> list[ServiceProcess]:
    nodes = [start_redis(root / f"node{i}", port=cluster_port(), extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
             for i in range(masters)]
    clients = [redis.Redis(port=node.port) for node in nodes]
    bounds = [round(i * 16384 / masters) for i in range(masters + 1)]
    for client, low, high in zip(clients, bounds, bounds[1:], strict=False):
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high - 1)
    for node in nodes[1:]:
        clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
    wait_for(lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients), 60, "cluster state ok")
    wait_for(lambda: all(len(c.execute_command("CLUSTER", "NODES").splitlines()) == masters for c in clients), 30, "nodes know each other")
    return nodes
