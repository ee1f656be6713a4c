"""Helpers for tests that run the real worker process against the real broker and Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from worker.contracts import RedisKeys, segment_headers
from worker.media import encode_image, encode_segment

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Lane:
    """An isolated topic, dead-letter topic, consumer group and Redis prefix for one test."""

    bootstrap: str
    redis_url: str
    partitions: int = 4
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def topic(self) -> str:
        return f"seg-{self.name}"

    @property
    def dlq(self) -> str:
        return f"dlq-{self.name}"

    @property
    def group(self) -> str:
        return f"grp-{self.name}"

    @property
    def prefix(self) -> str:
        return f"fw{self.name}"

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.prefix)

    def create_topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="tests")
        try:
            admin.create_topics([NewTopic(self.topic, self.partitions, 1), NewTopic(self.dlq, 1, 1)])
        finally:
            admin.close()

    def env(self, model: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWATCH_")}
        env.update({
            "FRAMEWATCH_MODEL": str(model), "FRAMEWATCH_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "FRAMEWATCH_KAFKA__TOPIC": self.topic, "FRAMEWATCH_KAFKA__DLQ_TOPIC": self.dlq, "FRAMEWATCH_KAFKA__GROUP": self.group,
            "FRAMEWATCH_KAFKA__SESSION_TIMEOUT_MS": "6000", "FRAMEWATCH_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
            "FRAMEWATCH_KAFKA__MAX_POLL_INTERVAL_MS": "10000", "FRAMEWATCH_REDIS__URL": self.redis_url,
            "FRAMEWATCH_REDIS__PREFIX": self.prefix, "FRAMEWATCH_METRICS_PORT": "0", "FRAMEWATCH_LOG_FORMAT": "json",
            "FRAMEWATCH_DECODE__WORKERS": "1", "FRAMEWATCH_BATCH__MAX_DELAY_MS": "20", "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env


class WorkerProcess:
    def __init__(self, lane: Lane, model: Path, log_path: Path, block_torch: bool = True, **env: str) -> None:
        environment = lane.env(model, **env)
        if block_torch:
            # A torch that cannot be imported: the worker must run without it.
            blocker = log_path.parent / "no_torch"
            blocker.mkdir(exist_ok=True)
            (blocker / "torch.py").write_text("raise ImportError('the worker must not import torch')\n")
            environment["PYTHONPATH"] = os.pathsep.join([str(blocker), str(REPO)])
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - stays open for the life of the process
        self.process = subprocess.Popen([sys.executable, "-m", "framewatch.cli", "worker"], env=environment, stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.kill_group()
            self.log.close()
        return code

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def logs(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")


def clip(seed: int, violent: bool, frames: int = 20, size: int = 64) -> list[np.ndarray]:
    from training.synth import render_clip

    return render_clip(seed, size, int(violent), frames)


def producer(lane: Lane) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=lane.bootstrap, acks="all", max_request_size=32 * 1024 * 1024)


def send_segment(prod: KafkaProducer, lane: Lane, stream: str, frames: list[np.ndarray], start_ms: int, fmt: str = "mpegts",
                 fps: float = 10.0, with_content_type: bool = True) -> None:
    payload, content_type = encode_segment(frames, fps, fmt)
    headers = segment_headers(content_type, segment_start_ms=start_ms, produced_at_ms=int(time.time() * 1000))
    if not with_content_type:
        headers = [h for h in headers if h[0] != "content-type"]
    prod.send(lane.topic, key=stream.encode(), value=payload, headers=headers)


def send_image(prod: KafkaProducer, lane: Lane, stream: str, pixels: np.ndarray, fmt: str, start_ms: int) -> None:
    payload, content_type = encode_image(pixels, fmt)
    prod.send(lane.topic, key=stream.encode(), value=payload, headers=segment_headers(content_type, segment_start_ms=start_ms))


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def offsets_report(lane: Lane) -> str:
    return f"committed {committed_offsets(lane)} vs end {end_offsets(lane)}"


def history_pts(client: redis.Redis, lane: Lane, stream: str) -> list[int]:
    entries: Any = client.xrange(lane.keys.history(stream))
    return [int(fields[b"pts_ms"]) for _, fields in entries]


def committed_offsets(lane: Lane) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=lane.bootstrap, group_id=lane.group, enable_auto_commit=False)
    try:
        out = {}
        for p in range(lane.partitions):
            value = consumer.committed(TopicPartition(lane.topic, p))
            out[p] = value or 0
        return out
    finally:
        consumer.close(autocommit=False)


def end_offsets(lane: Lane) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=lane.bootstrap, enable_auto_commit=False)
    try:
        ends = consumer.end_offsets([TopicPartition(lane.topic, p) for p in range(lane.partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        consumer.close(autocommit=False)


def read_dlq(lane: Lane, expected: int, timeout_s: float = 15) -> list[Any]:
    consumer = KafkaConsumer(lane.dlq, bootstrap_servers=lane.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
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
