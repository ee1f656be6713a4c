"""The worker's Kafka client plumbing: connecting with retries, finding the partition an unreadable
record stopped the client on, whether any broker connection is up, and lag per partition. The
kafka-python internals this relies on are read here and nowhere else."""

from __future__ import annotations

import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from framewatch.config import KafkaSettings
from framewatch.logs import get_logger
from framewatch.worker.metrics import Health

log = get_logger("worker")


def connect_consumer(k: KafkaSettings, stopping: threading.Event, health: Health) -> KafkaConsumer | None:
    """A consumer of the worker's group, retried with backoff while the broker cannot be reached;
    None when the worker is stopped first."""
    delay = 0.5
    while not stopping.is_set():
        try:
            return KafkaConsumer(
                group_id=k.group, enable_auto_commit=False, auto_offset_reset="earliest",
                session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
                max_poll_interval_ms=k.max_poll_interval_ms, max_poll_records=k.max_poll_records,
                fetch_max_bytes=k.fetch_max_bytes, max_partition_fetch_bytes=k.max_partition_fetch_bytes,
                **k.client_kwargs(),
            )
        except KafkaError as exc:
            health.reason = f"broker unreachable: {exc}"
            log.warning("cannot reach the broker, retrying", error=str(exc), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    return None


def stuck_partition(consumer: KafkaConsumer) -> tuple[TopicPartition, int] | None:
    """The partition whose fetched data the client failed on, and its position: kafka-python keeps
    it as the fetch it is draining (the other partitions' positions are where their data starts)."""
    fetcher: Any = getattr(consumer, "_fetcher", None)
    current: Any = getattr(fetcher, "_next_partition_records", None)
    tp = getattr(current, "topic_partition", None) if current else None  # a drained fetch is falsy
    if tp is None:
        completed = list(getattr(fetcher, "_completed_fetches", []) or [])
        tp = getattr(completed[0], "topic_partition", None) if completed else None
    if tp is None:
        return None
    try:
        return tp, consumer.position(tp)
    except KafkaError:
        return None


class BrokerWatch:
    """Whether the consumer holds any broker connection; kafka-python keeps the assignment through
    an outage, so the assignment alone would report ready with no broker. Read once a second."""

    def __init__(self) -> None:
        self._checked_at = 0.0
        self._ok = True

    def connected(self, consumer: KafkaConsumer) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= 1.0:
            self._checked_at = now
            metrics: Any = consumer.metrics()
            connections = metrics.get("consumer-metrics", {}).get("connection-count")
            ok = connections is None or connections > 0
            if ok and not self._ok:
                log.info("broker connection back")
            elif not ok and self._ok:
                log.warning("broker connection lost, retrying")
            self._ok = ok
        return self._ok


def partition_lag(consumer: KafkaConsumer) -> dict[tuple[str, int], int]:
    """Messages behind the high watermark, per assigned partition the client knows both ends of."""
    lag = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            position = consumer.position(tp)
        except KafkaError:
            continue
        lag[(tp.topic, tp.partition)] = max(0, high - position)
    return lag
