"""The worker: Kafka → decode pool → dynamic batcher → engine → scorer → Redis → commit.

Threads and processes::

    main thread      poll (never blocked by decode or inference), DLQ, commits, pause/resume,
                     rebalance callbacks, metrics of lag; the only user of the consumer
    decode pool      `decode.workers` processes running worker.decode.decode_segment
    inference thread batcher → engine.infer → scorer → one Redis transaction per batch,
                     retried with backoff while Redis is down; reports finished messages

Delivery is at least once: an offset is committed only when the message and every earlier
message of its partition are done (worker.offsets). Decoded messages enter the batcher in
offset order per partition, so one stream's frames are scored and written in stream order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import signal
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata

from engines.api import Engine
from framewatch.config import FrameWatchSettings
from framewatch.logs import get_logger
from worker import contracts
from worker.batcher import DynamicBatcher
from worker.decode import DecodeError, DecodeLimits, DecodeRequest
from worker.decode_pool import DecodeJob, DecodePool
from worker.inference import FrameItem, InferenceLoop, RateLimitedLog
from worker.metrics import Health, WorkerMetrics, serve
from worker.offsets import OffsetTracker
from worker.redis_io import Publisher, connect
from worker.scoring import MessageTime, ScoringParams, StreamScorer

log = get_logger("worker")

# A dead letter the DLQ refuses as too large is written as an envelope: key, headers, the first
# bytes of the value and its digest (docs/contracts.md, "Dead-letter topic").
DLQ_ENVELOPE_BYTES = 64 * 1024
DLQ_HEADER_ROOM = 1024 * 1024  # headers of a DLQ copy on top of the message's value


class DeadLetterFailed(RuntimeError):
    """The dead-letter topic refused a copy for good: the message cannot be quarantined."""


@dataclass(eq=False)
class InFlight:
    """One polled message on its way through the pipeline."""

    message: contracts.SegmentMessage
    epoch: int
    job: DecodeJob
    msg_time: MessageTime | None = None  # set once decoded
    remaining: int = 0
    finished_frames: set[int] = field(default_factory=set)  # indices written (or skipped as replays)
    rejected: bool = False  # dead-lettered while its frames were being written
    polled_at: float = field(default_factory=time.monotonic)

    @property
    def stream_id(self) -> str:
        return self.message.stream_id

    @property
    def produced_at_ms(self) -> int | None:
        return self.message.produced_at_ms


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.on_assigned(list(assigned))


class Worker:
    def __init__(self, settings: FrameWatchSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = WorkerMetrics()
        self.health = Health(stall_seconds=max(60.0, settings.kafka.max_poll_interval_ms / 1000))
        self.batcher: DynamicBatcher[FrameItem] = DynamicBatcher(settings.batch.max_batch, settings.batch.max_delay_ms)
        self.scorer = StreamScorer(ScoringParams(settings.scoring.ema_half_life_s, settings.scoring.recent_window_s,
                                                 settings.scoring.alert_on, settings.scoring.alert_off))
        self.offsets = OffsetTracker()
        self.queues: OrderedDict[tuple[str, int], deque[InFlight]] = OrderedDict()
        self.epochs: dict[tuple[str, int], int] = {}
        self.completions: queue.SimpleQueue[InFlight] = queue.SimpleQueue()
        self.rejections: queue.SimpleQueue[tuple[InFlight, str, str]] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.hard_stop = threading.Event()
        self.failed: str | None = None
        self.paused = False
        self._epoch_lock = threading.Lock()
        self._revoked_streams: set[str] = set()
        self._forget_all = False
        self._resume_from: dict[tuple[str, int], int] = {}
        self.totals = {"records": 0, "polled": 0, "unreadable_records": 0}
        self.notes = RateLimitedLog()
        self._lag_series: set[tuple[str, int]] = set()
        self._poll_error: str | None = None
        self._last_unreadable: tuple[str, int, int] | None = None
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self.pool: DecodePool | None = None
        self.inference: InferenceLoop | None = None

    # --- lifecycle -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        first_at: list[float] = []

        def handler(signum: int, _: Any) -> None:
            # A process-group signal can arrive twice at once; only a later one forces the stop.
            if self.stopping.is_set() and first_at and time.monotonic() - first_at[0] > 1.0:
                log.warning("second signal: stopping without draining", signal=signum)
                self.hard_stop.set()
            elif not self.stopping.is_set():
                log.info("signal received: draining", signal=signum, grace_s=self.settings.shutdown_grace_s)
                first_at.append(time.monotonic())
                self.stopping.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def fatal(self, reason: str) -> None:
        """Something the worker cannot go on without: stop now and exit non-zero (the supervisor
        restarts it; what was not committed is read again)."""
        if self.failed is None:
            self.failed = reason
            log.error("fatal: the worker stops and exits non-zero", reason=reason)
        self.health.fatal = reason
        self.health.ready = False
        self.metrics.ready.set(0)
        self.stopping.set()
        self.hard_stop.set()
        self.batcher.close()

    def run(self) -> int:
        """Runs until stopped; returns the exit status (0, or 1 after a fatal error)."""
        s = self.settings
        k = s.kafka
        server = serve(self.metrics, self.health, s.metrics_host, s.metrics_port) if s.metrics_port else None
        self.redis = connect(s.redis, writer=True)
        self.publisher = Publisher(self.redis, s.redis, self.engine.name)
        self.pool = DecodePool(s.decode.workers, s.decode.max_memory_mb, s.decode.max_decode_seconds, s.decode.kill_grace_s,
                               on_event=lambda event, **fields: log.warning(event, **fields))
        self.consumer = self._connect_consumer()
        # The DLQ copy of any message the input accepts must fit (too-large ones are trimmed).
        max_request = s.decode.max_message_bytes + DLQ_HEADER_ROOM
        self.producer = KafkaProducer(acks="all", retries=5, linger_ms=0, max_request_size=max_request, **k.client_kwargs())
        self.consumer.subscribe([k.topic], listener=_Rebalance(self))
        self.inference = InferenceLoop(
            batcher=self.batcher, engine=self.engine, scorer=self.scorer, publisher=self.publisher, metrics=self.metrics,
            health=self.health, is_current=self._current, done=self.completions.put, reject=self._reject,
            take_invalidations=self._take_invalidations, hard_stop=self.hard_stop, fatal=self.fatal,
            stale_after_s=s.scoring.stale_after_s,
            infer_delay_ms=s.faults.infer_delay_ms, infer_fail_after=s.faults.infer_fail_after)
        inference = threading.Thread(target=self.inference.run, name="inference", daemon=True)
        inference.start()
        log.info("worker started", topic=k.topic, group=k.group, model=self.engine.name, backend=self.engine.backend,
                 max_batch=s.batch.max_batch, max_delay_ms=s.batch.max_delay_ms, decode_workers=s.decode.workers)
        try:
            self._main_loop()
        except DeadLetterFailed as exc:
            self.fatal(str(exc))
        except Exception as exc:
            log.exception("main loop died")
            self.metrics.thread_deaths.labels("main").inc()
            self.fatal(f"main loop died: {exc.__class__.__name__}: {exc}")
        finally:
            self._shutdown(inference)
            if server is not None:
                server.shutdown()
        return 0 if self.failed is None else 1

    def _connect_consumer(self) -> KafkaConsumer:
        k = self.settings.kafka
        delay = 0.5
        while not self.stopping.is_set():
            try:
                return KafkaConsumer(
                    group_id=k.group, enable_auto_commit=False, auto_offset_reset="earliest",
                    session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
                    max_poll_interval_ms=k.max_poll_interval_ms, max_poll_records=k.max_poll_records,
                    fetch_max_bytes=k.fetch_max_bytes, max_partition_fetch_bytes=k.max_partition_fetch_bytes,
                    **k.client_kwargs(),
                )
            except KafkaError as exc:
                self.health.reason = f"broker unreachable: {exc}"
                log.warning("cannot reach the broker, retrying", error=str(exc), retry_in_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise SystemExit(0)

    def _main_loop(self) -> None:
        assert self.consumer is not None
        last_lag = 0.0
        while not self.hard_stop.is_set():
            self.health.tick()
            if self.stopping.is_set():
                if self.offsets.in_flight == 0 or self._drain_expired():
                    break
                self._pause_all()
            records = self._poll()
            for tp, batch in records.items():
                for record in batch:
                    self._accept(tp, record)
            self._pump_decodes()
            self._take_rejections()
            self._finish_completed()
            try:
                self._commit()
            except KafkaError as exc:
                # Nothing is forgotten: the same offsets are retried on the next pass.
                log.warning("commit failed, will retry", error=str(exc))
            self._backpressure()
            if time.monotonic() - last_lag > 5:
                self._update_lag()
                last_lag = time.monotonic()

    _drain_started: float | None = None

    def _drain_expired(self) -> bool:
        # What is left after the drain is read again by the next owner; the rest of the grace
        # period is for the final commit and leaving the group.
        limit = max(1.0, self.settings.shutdown_grace_s - 5.0)
        if self._drain_started is None:
            self._drain_started = time.monotonic()
        return time.monotonic() - self._drain_started > limit

    def _shutdown(self, inference: threading.Thread) -> None:
        self.batcher.close()
        if self.pool is not None:
            self.pool.close()  # kills the decoders: a stuck one must not hold the exit
        inference.join(timeout=2.0 if self.hard_stop.is_set() else 5.0)
        self._finish_completed()
        try:
            self._commit()
        except KafkaError as exc:
            log.warning("final commit failed", error=str(exc))
        if self.consumer is not None:
            self.consumer.close(autocommit=False)  # leaves the group: partitions move at once
        if self.producer is not None:
            self.producer.close(timeout=2)
        totals = {**self.totals, **(self.inference.totals if self.inference else {})}
        log.info("worker stopped", in_flight=self.offsets.in_flight, exit_status=0 if self.failed is None else 1, **totals)

    # --- intake ----------------------------------------------------------------------

    def _poll(self) -> dict[Any, Any]:
        assert self.consumer is not None
        try:
            records = self.consumer.poll(timeout_ms=50, max_records=self._poll_budget())
            self._poll_error = None
            return records
        except CorruptRecordError as exc:
            self._skip_unreadable(exc)
            return {}
        except UnicodeDecodeError as exc:  # a header key that is not UTF-8: kafka-python decodes them strictly
            self._skip_unreadable(exc)
            return {}
        except KafkaError as exc:
            self._poll_error = f"poll failed: {exc.__class__.__name__}: {exc}"
            log.warning("poll failed", error=str(exc))
            time.sleep(0.5)
            return {}

    def _skip_unreadable(self, exc: Exception) -> None:
        """A record kafka-python cannot parse (a header key that is not UTF-8, a failed CRC): the
        client would stop at it for good. It is the next record of one partition: dead-letter what
        can be read of it (its position), seek past it and go on."""
        assert self.consumer is not None
        stuck = self._stuck_partition()
        self.metrics.unreadable_records.inc()
        self.totals["unreadable_records"] += 1
        if stuck is None:
            log.warning("unreadable record, partition unknown; retrying", error=str(exc)[:300])
            time.sleep(0.2)
            return
        tp, offset = stuck
        # kafka-python parses a whole record batch from its first record: after a skip, the records
        # behind the bad one in its batch fail again, one position on. They are skipped the same way
        # (their DLQ copies name their source offsets; the records stay in the topic), and said so.
        batch_mate = self._last_unreadable == (tp.topic, tp.partition, offset - 1)
        self._last_unreadable = (tp.topic, tp.partition, offset)
        log.warning("unreadable record skipped", error=str(exc)[:300], partition=tp.partition, offset=offset,
                    in_batch_of_previous=batch_mate)
        self.offsets.add(tp.topic, tp.partition, offset)
        why = (f"in the record batch of an unreadable record at offset {offset - 1}; the client cannot parse past it: "
               if batch_mate else "the Kafka client could not parse this record: ")
        self._send_dlq(None, b"", [], tp.topic, tp.partition, offset, contracts.ERROR_UNREADABLE_RECORD,
                       f"{why}{exc.__class__.__name__}: {exc}")
        self.offsets.mark_done(tp.topic, tp.partition, offset)
        self.consumer.seek(tp, offset + 1)

    def _stuck_partition(self) -> tuple[TopicPartition, int] | None:
        """The partition whose fetched data the client failed on: kafka-python keeps it as the
        fetch it is draining (the other partitions' positions are where their data starts)."""
        assert self.consumer is not None
        fetcher: Any = getattr(self.consumer, "_fetcher", None)
        current: Any = getattr(fetcher, "_next_partition_records", None)
        tp = getattr(current, "topic_partition", None) if current else None  # a drained fetch is falsy
        if tp is None:
            completed = list(getattr(fetcher, "_completed_fetches", []) or [])
            tp = getattr(completed[0], "topic_partition", None) if completed else None
        if tp is None:
            return None
        try:
            return tp, self.consumer.position(tp)
        except KafkaError:
            return None

    def _poll_budget(self) -> int:
        free = self.settings.batch.max_inflight_messages - self.offsets.in_flight
        return max(1, min(self.settings.kafka.max_poll_records, free))

    def _accept(self, tp: TopicPartition, record: Any) -> None:
        key = (tp.topic, tp.partition)
        self.offsets.add(tp.topic, tp.partition, record.offset)
        self.totals["records"] += 1
        try:
            message = contracts.parse_message(tp.topic, tp.partition, record.offset, record.key, record.value, record.headers,
                                              self.settings.decode.max_message_bytes, getattr(record, "timestamp", None))
        except contracts.ContractError as exc:
            self._dead_letter(record, tp, exc.error_type, str(exc))
            self.offsets.mark_done(tp.topic, tp.partition, record.offset)
            return
        if message.key_mismatch:
            self.metrics.key_mismatch.inc()
            self.notes.note(message.stream_id, "stream-id header differs from the key: the stream's messages may spread over "
                                               "partitions, whose order Kafka does not keep", key=(message.key or b"")[:80].decode("utf-8", "replace"))
        inflight = InFlight(message, self.epochs.get(key, 0), DecodeJob(self._decode_request(message)))
        assert self.pool is not None
        self.pool.add(inflight.job)
        self.queues.setdefault(key, deque()).append(inflight)
        self.metrics.messages.labels("polled").inc()
        self.totals["polled"] += 1

    def _decode_request(self, message: contracts.SegmentMessage) -> DecodeRequest:
        # An untimed message is decoded from 0: its place in stream time is the scorer's to give.
        start = message.segment_start_ms if message.timed else 0
        request = decode_request(self.settings, self.engine, message.payload, message.content_type, start, message.segment_duration_ms)
        if self.settings.faults.decode_hang_stream is not None and message.stream_id == self.settings.faults.decode_hang_stream:
            request = replace(request, fault_hang=True)
        return request

    def _pump_decodes(self) -> None:
        """Hand decoded messages to the batcher in offset order per partition."""
        assert self.pool is not None
        for job in self.pool.pump():
            assert job.failure is not None
            counter = self.metrics.decoder_crashes if job.failure.error_type == "decoder-crash" else self.metrics.decode_kills
            counter.inc()
        for key, pending in self.queues.items():
            while pending and pending[0].job.finished():
                inflight = pending.popleft()
                msg = inflight.message
                try:
                    result = inflight.job.outcome()
                except DecodeError as exc:
                    self._dead_letter_message(msg, exc.error_type, str(exc))
                    self.offsets.mark_done(*key, msg.offset)
                    continue
                except Exception as exc:  # anything else a decode process could send back
                    self._dead_letter_message(msg, "decode-error", f"{exc.__class__.__name__}: {exc}")
                    self.offsets.mark_done(*key, msg.offset)
                    continue
                self.metrics.decode_seconds.observe(result.seconds)
                self.metrics.frames_decoded.inc(result.decoded)
                self.metrics.frames_sampled.inc(len(result.frames))
                if result.truncated:
                    self.metrics.segments_truncated.inc()
                    self.notes.note(msg.stream_id, "truncated segment: its decoded frames are scored", detail=result.truncated,
                                    partition=msg.partition, offset=msg.offset)
                if not result.frames:
                    self.offsets.mark_done(*key, msg.offset)
                    self.metrics.messages.labels("empty").inc()
                    continue
                inflight.msg_time = MessageTime(msg.partition, msg.offset, msg.record_ts_ms, msg.segment_start_ms, msg.time_hint_ms,
                                            result.duration_ms, msg.broadcast_id)
                inflight.remaining = len(result.frames)
                start = msg.segment_start_ms if msg.timed else 0
                for index, frame in enumerate(result.frames):
                    self.batcher.put(FrameItem(inflight, index, frame.pts_ms - (start or 0), frame.pixels))

    # --- dead letters ----------------------------------------------------------------

    def _reject(self, inflight: InFlight, error_type: str, error: str) -> None:
        """From the inference thread: the message's frames cannot be written; dead-letter it."""
        inflight.rejected = True
        self.rejections.put((inflight, error_type, error))

    def _take_rejections(self) -> None:
        while True:
            try:
                inflight, error_type, error = self.rejections.get_nowait()
            except queue.Empty:
                return
            msg = inflight.message
            key = (msg.topic, msg.partition)
            with self._epoch_lock:
                ours = self.epochs.get(key, 0) == inflight.epoch and key in self.offsets.partitions
            if ours:
                self._dead_letter_message(msg, error_type, error)
                self.offsets.mark_done(msg.topic, msg.partition, msg.offset)

    def _dead_letter(self, record: Any, tp: TopicPartition, error_type: str, error: str) -> None:
        self._send_dlq(record.key, record.value, record.headers, tp.topic, tp.partition, record.offset, error_type, error)

    def _dead_letter_message(self, msg: contracts.SegmentMessage, error_type: str, error: str) -> None:
        self._send_dlq(msg.key, msg.payload, msg.headers, msg.topic, msg.partition, msg.offset, error_type, error)

    def _send_dlq(self, key: bytes | None, value: bytes | None, headers: Any, topic: str, partition: int, offset: int,
                  error_type: str, error: str) -> None:
        """Copy a message to the DLQ and wait for the broker's ack (its offset is committed right
        after). Retriable errors are retried for ``kafka.dlq_timeout_s``; a copy the DLQ refuses as
        too large is written as an envelope; anything else raises :class:`DeadLetterFailed`."""
        assert self.producer is not None
        value = value or b""
        dlq_headers = contracts.dlq_headers(error_type, error, topic, partition, offset, headers)
        deadline = time.monotonic() + self.settings.kafka.dlq_timeout_s
        if self.stopping.is_set():  # within the shutdown's grace, whatever the DLQ timeout
            deadline = min(deadline, time.monotonic() + max(1.0, self.settings.shutdown_grace_s / 4))
        delay, trimmed = 0.2, False
        while True:
            try:
                self.producer.send(self.settings.kafka.dlq_topic, key=key, value=value, headers=dlq_headers).get(timeout=10)
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
                    raise DeadLetterFailed(f"dead-letter writes failing for {self.settings.kafka.dlq_timeout_s:.0f} s: {exc}") from None
                log.warning("dead-letter write failed, retrying", error=str(exc), topic=topic, partition=partition, offset=offset)
                self.health.tick()
                self.hard_stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self.metrics.dlq.labels(error_type).inc()
        self.metrics.messages.labels("dead-lettered").inc()
        stream = key.decode("utf-8", "replace")[:80] if key else None
        log.warning("message dead-lettered", error_type=error_type, error=error[:200], stream=stream, partition=partition, offset=offset)

    # --- inference side ----------------------------------------------------------------

    def _current(self, inflight: InFlight) -> bool:
        key = (inflight.message.topic, inflight.message.partition)
        with self._epoch_lock:
            return not inflight.rejected and self.epochs.get(key, 0) == inflight.epoch and key in self.offsets.partitions

    def _take_invalidations(self) -> tuple[bool, set[str]]:
        with self._epoch_lock:
            forget_all, streams = self._forget_all, self._revoked_streams
            self._forget_all, self._revoked_streams = False, set()
        return forget_all, streams

    # --- commits and flow control ----------------------------------------------------

    def _finish_completed(self) -> None:
        while True:
            try:
                inflight = self.completions.get_nowait()
            except queue.Empty:
                return
            msg = inflight.message
            self.offsets.mark_done(msg.topic, msg.partition, msg.offset)
            self.metrics.messages.labels("scored").inc()
            log.debug("message scored", stream=msg.stream_id, partition=msg.partition, offset=msg.offset)

    def _commit(self, only: set[tuple[str, int]] | None = None, wait: bool = True) -> None:
        """Commit what is finished; ``wait=False`` queues it without blocking (rebalance callbacks)."""
        assert self.consumer is not None
        ready = self.offsets.committable()
        if only is not None:
            ready = {k: v for k, v in ready.items() if k in only}
        if not ready:
            return
        offsets = {TopicPartition(t, p): OffsetAndMetadata(offset, "", -1) for (t, p), offset in ready.items()}
        if wait:
            self.consumer.commit(offsets)
        else:
            self.consumer.commit_async(offsets)
        self.offsets.acknowledge(ready)
        self.metrics.commits.inc()
        for (topic, partition), offset in ready.items():
            log.debug("committed" if wait else "commit sent", topic=topic, partition=partition, offset=offset)

    @property
    def redis_ok(self) -> bool:
        return self.inference is None or self.inference.redis_ok

    def _backpressure(self) -> None:
        assert self.consumer is not None
        b = self.settings.batch
        queued = len(self.batcher)
        in_flight = self.offsets.in_flight
        self.metrics.queue_depth.labels("in_flight_messages").set(in_flight)
        full = queued >= b.max_queued_frames or in_flight >= b.max_inflight_messages or not self.redis_ok
        if full and not self.paused:
            self._pause_all()
            log.info("backpressure: partitions paused", queued_frames=queued, in_flight=in_flight, redis_ok=self.redis_ok)
        elif self.paused and not self.stopping.is_set() and queued < b.max_queued_frames // 2 and in_flight < b.max_inflight_messages // 2 and self.redis_ok:
            self.consumer.resume(*self.consumer.assignment())
            self.paused = False
            self.metrics.paused.set(0)
            log.info("backpressure: partitions resumed")
        assigned = len(self.consumer.assignment())
        broker_ok = self._broker_connected()
        # A member with no partitions is ready: more replicas than partitions, or a surge pod of a
        # rolling update, must not hold the rollout back.
        ready = self.redis_ok and broker_ok and self.failed is None and self._poll_error is None
        self.health.ready = ready
        self.health.reason = (self.failed if self.failed else "broker unreachable" if not broker_ok else
                              self._poll_error if self._poll_error else
                              "Redis writes failing" if not self.redis_ok else
                              "ok" if assigned else "ok (no partitions assigned: an idle member of the group)")
        self.metrics.ready.set(int(ready))

    _broker_checked_at = 0.0
    _broker_ok = True

    def _broker_connected(self) -> bool:
        """Whether the consumer holds any broker connection; kafka-python keeps the assignment through
        an outage, so the assignment alone would report ready with no broker. Read once a second."""
        assert self.consumer is not None
        now = time.monotonic()
        if now - self._broker_checked_at >= 1.0:
            self._broker_checked_at = now
            metrics: Any = self.consumer.metrics()
            connections = metrics.get("consumer-metrics", {}).get("connection-count")
            ok = connections is None or connections > 0
            if ok and not self._broker_ok:
                log.info("broker connection back")
            elif not ok and self._broker_ok:
                log.warning("broker connection lost, retrying")
            self._broker_ok = ok
        return self._broker_ok

    def _pause_all(self) -> None:
        assert self.consumer is not None
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(*assignment)
        self.paused = True
        self.metrics.paused.set(1)

    def _drop_lag_series(self, keys: set[tuple[str, int]]) -> None:
        """A moved partition's lag is its new owner's to report; a frozen series here would be summed twice."""
        for topic, partition in keys:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(topic, str(partition))
        self._lag_series = self._lag_series - keys

    def _update_lag(self) -> None:
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self.consumer.position(tp)
            except KafkaError:
                continue
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
            self._lag_series = self._lag_series | {(tp.topic, tp.partition)}

    # --- rebalance (called inside poll, on the main thread) ---------------------------

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in revoked}
        self._pump_decodes()
        self._take_rejections()
        self._finish_completed()
        # kafka-python 3 runs this callback on its network thread, where a blocking commit() is
        # refused; commit_async() queues the commit ahead of the rejoin. If it is lost, the new
        # owner replays from the last commit and frames Redis already holds are skipped.
        try:
            self._commit(only=keys, wait=False)
        except KafkaError as exc:
            log.warning("commit on revoke failed; the new owner replays from the last commit", error=str(exc))
        for key in keys:
            state = self.offsets.partitions.get(key)
            unfinished = [o for o in state.pending if o not in state.done] if state is not None else []
            if unfinished:
                # kafka-python keeps the fetch position of a partition that comes straight back to
                # this member; the in-flight work dropped below must be read again, so remember it.
                self._resume_from[key] = unfinished[0]
        streams: set[str] = set()
        with self._epoch_lock:
            for key in keys:
                self.epochs[key] = self.epochs.get(key, 0) + 1
                for inflight in self.queues.pop(key, deque()):
                    if self.pool is not None:
                        self.pool.cancel(inflight.job)
                    streams.add(inflight.message.stream_id)
                self.offsets.forget(*key)
            self._revoked_streams |= streams
        self._drop_lag_series(keys)
        dropped = self.batcher.drop(lambda item: (item.inflight.message.topic, item.inflight.message.partition) in keys)
        log.info("partitions revoked", partitions=sorted(p for _, p in keys), dropped_frames=dropped)
        self.metrics.assigned.set(len(self.consumer.assignment()) - len(keys) if self.consumer else 0)

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            offset = self._resume_from.pop((tp.topic, tp.partition), None)
            if offset is not None and self.consumer is not None:
                self.consumer.seek(tp, offset)  # local: allowed on the network thread
        self._resume_from.clear()  # partitions that went elsewhere resume from their commits there
        with self._epoch_lock:
            # Another worker may have written these partitions' streams meanwhile: read them again.
            self._forget_all = True
        owned = {(tp.topic, tp.partition) for tp in assigned}
        self._drop_lag_series({key for key in self._lag_series if key not in owned})
        self.paused = False
        self.metrics.paused.set(0)
        self.metrics.assigned.set(len(assigned))
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))


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


def decode_request(settings: FrameWatchSettings, engine: Engine, payload: bytes, content_type: str | None,
                   segment_start_ms: int | None, segment_duration_ms: int | None) -> DecodeRequest:
    """What the decode pool is asked for one message: the engine's input size and interpolation,
    the decode settings and limits. The benchmarks build their requests here too."""
    d = settings.decode
    height, width = engine.input_size
    return DecodeRequest(
        payload=payload, content_type=content_type, width=width, height=height,
        interpolation=getattr(engine, "interpolation", "bilinear"), sample_fps=d.sample_fps, keyframes_only=d.keyframes_only,
        segment_start_ms=segment_start_ms, limits=DecodeLimits(d.max_frames, d.max_pixels, d.max_decode_seconds), hwaccel=d.hwaccel,
        segment_duration_ms=segment_duration_ms, strict=d.strict, truncation_tolerance_ms=d.truncation_tolerance_ms,
    )


def run_worker(settings: FrameWatchSettings) -> int:
    from engines.api import load

    if settings.model is None:
        raise SystemExit("framewatch worker: --model ARTIFACT_DIR is required (or FRAMEWATCH_MODEL / model: in the config file)")
    engine = load(settings.model, settings.backend, intra_op_threads=settings.intra_op_threads)
    worker = Worker(settings, engine)
    worker.install_signal_handlers()
    log.info("starting", pid=os.getpid())
    return worker.run()
