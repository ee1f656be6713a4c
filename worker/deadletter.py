"""The dead-letter topic: a message that cannot be scored is copied there, with why, before its
offset is committed (docs/contracts.md, "Dead-letter topic")."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from framewatch.logs import get_logger
from framewatch.worker import contracts
from framewatch.worker.metrics import Health, WorkerMetrics

log = get_logger("worker")

# A dead letter the DLQ refuses as too large is written as an envelope: key, headers, the first
# bytes of the value and its digest (docs/contracts.md, "Dead-letter topic").
DLQ_ENVELOPE_BYTES = 64 * 1024
DLQ_HEADER_ROOM = 1024 * 1024  # headers of a DLQ copy on top of the message's value


class DeadLetterFailed(RuntimeError):
    """The dead-letter topic refused a copy for good: the message cannot be quarantined."""


class DeadLetters:
    """Writes DLQ copies and waits for the broker's ack; owned by the worker's main thread."""

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float, shutdown_grace_s: float, metrics: WorkerMetrics,
                 health: Health, stopping: threading.Event, hard_stop: threading.Event) -> None:
        self.producer, self.topic, self.timeout_s, self.shutdown_grace_s = producer, topic, timeout_s, shutdown_grace_s
        self.metrics, self.health, self.stopping, self.hard_stop = metrics, health, stopping, hard_stop

    def send(self, key: bytes | None, value: bytes | None, headers: Any, topic: str, partition: int, offset: int,
             error_type: str, error: str) -> None:
        """Copy a message to the DLQ and wait for the broker's ack (its offset is committed right
        after). Retriable errors are retried for ``kafka.dlq_timeout_s``; a copy the DLQ refuses as
        too large is written as an envelope; anything else raises :class:`DeadLetterFailed`."""
        value = value or b""
        dlq_headers = contracts.dlq_headers(error_type, error, topic, partition, offset, headers)
        deadline = time.monotonic() + self.timeout_s
        if self.stopping.is_set():  # within the shutdown's grace, whatever the DLQ timeout
            deadline = min(deadline, time.monotonic() + max(1.0, self.shutdown_grace_s / 4))
        delay, trimmed = 0.2, False
        while True:
            try:
                self.producer.send(self.topic, key=key, value=value, headers=dlq_headers).get(timeout=10)
                break
            except MessageSizeTooLargeError as exc:
                if trimmed:
                    raise DeadLetterFailed(f"the dead-letter topic refuses even the trimmed copy of {topic}/{partition}@{offset}: {exc}") from None
                value, dlq_headers = dlq_envelope(value, dlq_headers)
                key = key[:1024] if key else key
                trimmed = True
                self.metrics.dlq_envelopes.inc()
                log.warning("dead letter too large for the DLQ: writing its envelope", error=str(exc)[:200], partition=partition, offset=offset)
            except KafkaError as exc:
                if not exc.retriable and not isinstance(exc, KafkaTimeoutError):
                    raise DeadLetterFailed(f"the dead-letter topic refused {topic}/{partition}@{offset}: {exc.__class__.__name__}: {exc}") from None
                if self.hard_stop.is_set() or time.monotonic() > deadline:
                    raise DeadLetterFailed(f"dead-letter writes failing for {self.timeout_s:.0f} s: {exc}") from None
                log.warning("dead-letter write failed, retrying", error=str(exc), topic=topic, partition=partition, offset=offset)
                self.health.tick()
                self.hard_stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self.metrics.dlq.labels(error_type).inc()
        self.metrics.messages.labels("dead-lettered").inc()
        stream = key.decode("utf-8", "replace")[:80] if key else None
        log.warning("message dead-lettered", error_type=error_type, error=error[:200], stream=stream, partition=partition, offset=offset)


def dlq_envelope(value: bytes, headers: list[tuple[str, bytes]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A dead letter too large for the DLQ, trimmed: the first bytes of the value, its size and
    sha256, and the headers (each value cut to 1 KiB, at most 64 of them); the key is cut to 1 KiB
    by the caller."""
    kept = [(k, v[:1024]) for k, v in headers[-64:]]
    return value[:DLQ_ENVELOPE_BYTES], [
        *kept,
        (contracts.DLQ_TRIMMED, b"1"),
        (contracts.DLQ_ORIGINAL_SIZE, str(len(value)).encode()),
        (contracts.DLQ_ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
    ]
