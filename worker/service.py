"""The worker: Kafka → decode pool → dynamic batcher → engine → scorer → Redis → commit.

Threads and processes::

    main thread      poll (never blocked by decode or inference), DLQ, commits, pause/resume,
                     rebalance callbacks, metrics of lag; the only user of the consumer
    decode pool      `decode.workers` processes running framewatch.worker.decode.decode_segment
    inference thread batcher → engine.infer → scorer → one Redis transaction per batch,
                     retried with backoff while Redis is down; reports finished messages

Delivery is at least once: an offset is committed only when the message and every earlier
message of its partition are done (framewatch.worker.offsets). Decoded messages enter the batcher in
offset order per partition, so one stream's frames are scored and written in stream order.
"""

from __future__ import annotations

import contextlib
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
from kafka.errors import CorruptRecordError, KafkaError
from kafka.structs import OffsetAndMetadata

from framewatch.config import ConfigError, FrameWatchSettings
from framewatch.engines.base import Engine
from framewatch.logs import get_logger
from framewatch.worker import contracts
from framewatch.worker.batcher import DynamicBatcher
from framewatch.worker.deadletter import DLQ_HEADER_ROOM, DeadLetterFailed, DeadLetters
from framewatch.worker.decode import DecodeError, DecodeRequest, HWAccelError, decode_request, probe_hwaccel
from framewatch.worker.decode_pool import DecodeJob, DecodePool
from framewatch.worker.evidence import EvidenceRecorder, open_store
from framewatch.worker.inference import FrameItem, InferenceLoop, RateLimitedLog
from framewatch.worker.kafka_client import BrokerWatch, connect_consumer, partition_lag, stuck_partition
from framewatch.worker.metrics import Health, WorkerMetrics, serve
from framewatch.worker.offsets import OffsetTracker
from framewatch.worker.redis_io import Publisher, connect
from framewatch.worker.sampling import Sampler
from framewatch.worker.scoring import MessageTime, ScoringParams, StreamScorer

log = get_logger("worker")

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
        self.sampler = Sampler(settings.decode.policy, settings.decode.watch_on, settings.decode.watch_off)
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
        self.dead_letters: DeadLetters | None = None
        self.pool: DecodePool | None = None
        self.inference: InferenceLoop | None = None
        self.broker_watch = BrokerWatch()

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
        self.publisher = Publisher(self.redis, s.redis, self.engine.name, s.scoring.alert_on)
        recorder = self._evidence_recorder()
        memory_cap = s.decode.max_memory_mb
        if s.decode.hwaccel and memory_cap:
            # A CUDA context reserves far more address space than it uses (tens of GB), so an
            # RLIMIT_AS cap would make every device decode fail; max_pixels and max_frames still
            # bound each message.
            log.warning("decode.max_memory_mb is not applied with decode.hwaccel (a device context reserves "
                        "more address space than the cap)", max_memory_mb=memory_cap, hwaccel=s.decode.hwaccel)
            memory_cap = 0
        self.pool = DecodePool(s.decode.workers, memory_cap, s.decode.max_decode_seconds, s.decode.kill_grace_s,
                               on_event=lambda event, **fields: log.warning(event, **fields))
        self.consumer = self._connect_consumer()
        # The DLQ copy of any message the input accepts must fit (too-large ones are trimmed).
        max_request = s.decode.max_message_bytes + DLQ_HEADER_ROOM
        self.producer = KafkaProducer(acks="all", retries=5, linger_ms=0, max_request_size=max_request, **k.client_kwargs())
        self.dead_letters = DeadLetters(self.producer, k.dlq_topic, k.dlq_timeout_s, s.shutdown_grace_s, self.metrics, self.health,
                                        self.stopping, self.hard_stop)
        self.consumer.subscribe([k.topic], listener=_Rebalance(self))
        self.inference = InferenceLoop(
            batcher=self.batcher, engine=self.engine, scorer=self.scorer, publisher=self.publisher, metrics=self.metrics,
            health=self.health, is_current=self._current, done=self.completions.put, reject=self._reject,
            take_invalidations=self._take_invalidations, hard_stop=self.hard_stop, fatal=self.fatal,
            stale_after_s=s.scoring.stale_after_s,
            infer_delay_ms=s.faults.infer_delay_ms, infer_fail_after=s.faults.infer_fail_after, recorder=recorder)
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

    def _evidence_recorder(self) -> EvidenceRecorder | None:
        s = self.settings
        store = open_store(s.evidence, s.redis)
        if store is None:
            log.info("evidence off (evidence.backend: none): alerts carry no frames")
            return None
        try:
            usage = store.usage()
            log.info("evidence store", backend=store.name, **usage)
            warning = getattr(store, "memory_warning", lambda: None)()
            if warning:
                log.warning(warning)
        except Exception as exc:  # alerts matter more than their pictures: scoring starts anyway
            log.error("evidence store unreachable; alerts go out without evidence until it answers", backend=store.name,
                      error=f"{exc.__class__.__name__}: {exc}")

        def counted(what: str, label: str) -> None:
            if what == "written":
                self.metrics.evidence_written.labels(label).inc()
            elif what == "failed":
                self.metrics.evidence_failed.labels(label).inc()
            else:
                self.metrics.near_misses.inc()

        exit_after = (lambda: os._exit(70)) if s.faults.exit_after_evidence else None
        return EvidenceRecorder(store, s.evidence, s.scoring.alert_on, s.scoring.recent_window_s, self.engine.name, counted, exit_after,
                                shares_scores_redis=s.evidence.backend == "redis" and s.evidence.redis_url in (None, s.redis.url))

    def _connect_consumer(self) -> KafkaConsumer:
        consumer = connect_consumer(self.settings.kafka, self.stopping, self.health)
        if consumer is None:
            raise SystemExit(0)
        return consumer

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
        assert self.consumer is not None
        return stuck_partition(self.consumer)

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
        state = self.scorer.streams.get(message.stream_id)  # read as the inference thread left it
        keyframes = self.sampler.keyframes_only(message.stream_id, state.ema if state is not None else None)
        request = decode_request(self.settings.decode, self.engine, message.payload, message.content_type, start, message.segment_duration_ms,
                                 keyframes_only=keyframes)
        if self.settings.evidence.backend != "none":
            request = replace(request, evidence_long_side=self.settings.evidence.long_side, evidence_qscale=self.settings.evidence.jpeg_qscale)
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
                if message_is_video(inflight.job.request):
                    self.metrics.sampling.labels("keyframes" if inflight.job.request.keyframes_only else "grid").inc()
                if result.hwaccel is not None:
                    self._count_hwaccel(result.hwaccel)
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
                    self.batcher.put(FrameItem(inflight, index, frame.pts_ms - (start or 0), frame.pixels, frame.evidence))

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
        assert self.dead_letters is not None
        self.dead_letters.send(key, value, headers, topic, partition, offset, error_type, error)

    # --- inference side ----------------------------------------------------------------

    def _count_hwaccel(self, outcome: str) -> None:
        """Per message with decode.hwaccel: on the device, or in software (logged, rate-limited, with why)."""
        if outcome.startswith("software"):
            self.metrics.hwaccel_messages.labels("software").inc()
            self.notes.note("*", "hardware decoding failed for a message: decoded in software", detail=outcome)
        else:
            self.metrics.hwaccel_messages.labels("device").inc()

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

    def _broker_connected(self) -> bool:
        assert self.consumer is not None
        return self.broker_watch.connected(self.consumer)

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
        for (topic, partition), lag in partition_lag(self.consumer).items():
            self.metrics.lag.labels(topic, str(partition)).set(lag)
            self._lag_series = self._lag_series | {(topic, partition)}

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


def message_is_video(request: DecodeRequest) -> bool:
    return request.content_type not in contracts.IMAGE_CONTENT_TYPES


def check_hwaccel(device: str) -> str:
    """The start-up check of ``decode.hwaccel``: what was verified, or a one-line refusal."""
    try:
        return probe_hwaccel(device)
    except HWAccelError as exc:
        raise HWAccelError(f"decode.hwaccel={device} is set but hardware decoding does not work here: {exc}. "
                           "Unset decode.hwaccel to decode in software") from None


def run_worker(settings: FrameWatchSettings) -> int:
    from framewatch.engines.registry import load

    if settings.model is None:
        raise ConfigError("--model ARTIFACT_DIR is required (or FRAMEWATCH_MODEL / model: in the config file)")
    verified = check_hwaccel(settings.decode.hwaccel) if settings.decode.hwaccel else None
    engine = load(settings.model, settings.backend, intra_op_threads=settings.intra_op_threads)
    worker = Worker(settings, engine)
    if verified and settings.decode.hwaccel:
        log.info("hardware decoding active", hwaccel=settings.decode.hwaccel, verified=verified)
        worker.metrics.hwaccel.labels(settings.decode.hwaccel).set(1)
    worker.install_signal_handlers()
    log.info("starting", pid=os.getpid())
    return worker.run()
