"""Test traffic: a sandbox (an isolated topic, dead-letter topic, consumer group and Redis prefix on
a shared broker and Redis) and a real `framewatch worker` process running on it. The benchmarks
and the integration and reliability tests run the worker this way, side by side."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from framewatch.worker.contracts import RedisKeys


@dataclass
class Sandbox:
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
            "FRAMEWATCH_REDIS__PREFIX": self.prefix, "FRAMEWATCH_EVIDENCE__PREFIX": f"{self.prefix}:evidence", "FRAMEWATCH_METRICS_PORT": "0", "FRAMEWATCH_LOG_FORMAT": "json",
            "FRAMEWATCH_DECODE__WORKERS": "1", "FRAMEWATCH_BATCH__MAX_DELAY_MS": "20", "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env


class WorkerProcess:
    """`framewatch worker` on a sandbox, in its own process group (decode processes included)."""

    def __init__(self, sandbox: Sandbox, model: Path, log_path: Path, block_torch: bool = False, extra_env: Mapping[str, str] | None = None,
                 **env: str) -> None:
        # Absolute: the worker runs in the log's folder, and a relative --model would be looked up there.
        environment = sandbox.env(Path(model).resolve(), **{**(extra_env or {}), **env})
        if block_torch:
            # A torch that cannot be imported: the worker must run without it.
            blocker = log_path.parent / "no_torch"
            blocker.mkdir(exist_ok=True)
            (blocker / "torch.py").write_text("raise ImportError('the worker must not import torch')\n")
            environment["PYTHONPATH"] = str(blocker)
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - stays open for the life of the process
        self.process = subprocess.Popen([sys.executable, "-m", "framewatch.cli", "worker"], env=environment, stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=log_path.parent, start_new_session=True)

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


def committed_offsets(sandbox: Sandbox) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=sandbox.bootstrap, group_id=sandbox.group, enable_auto_commit=False)
    try:
        out = {}
        for p in range(sandbox.partitions):
            value = consumer.committed(TopicPartition(sandbox.topic, p))
            out[p] = value or 0
        return out
    finally:
        consumer.close(autocommit=False)


def end_offsets(sandbox: Sandbox) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=sandbox.bootstrap, enable_auto_commit=False)
    try:
        ends = consumer.end_offsets([TopicPartition(sandbox.topic, p) for p in range(sandbox.partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        consumer.close(autocommit=False)
