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

import concurrent.futures as cf
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from engines.api import Engine
from framewatch.config import FrameWatchSettings
from framewatch.logs import get_logger
from worker import contracts
from worker.batcher import DynamicBatcher
from worker.decode import DecodeError, DecodeLimits, DecodeRequest, DecodeResult, decode_segment
from worker.metrics import Health, WorkerMetrics, serve
from worker.offsets import OffsetTracker
from worker.redis_io import Publisher, ScoredFrame, connect
from worker.scoring import ScoringParams, StreamScorer

log = get_logger("worker")


@dataclass(eq=False)
class InFlight:
    """One polled message on its way through the pipeline."""

    message: contracts.SegmentMessage
    epoch: int
    future: cf.Future[DecodeResult] | None = None
    attempts: int = 1
    remaining: int = 0
    polled_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class FrameItem:
    inflight: InFlight
    pts_ms: int
    pixels: np.ndarray


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
        self.stopping = threading.Event()
        self.hard_stop = threading.Event()
        self.redis_ok = True
        self.paused = False
        self._epoch_lock = threading.Lock()
        self._revoked_streams: set[str] = set()
        self._resume_from: dict[tuple[str, int], int] = {}
        self.totals = {"records": 0, "polled": 0, "scored_frames": 0, "replayed_frames": 0}
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self.pool: cf.ProcessPoolExecutor | None = None

    # --- lifecycle -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        first_at: list[float] = []

        def handler(signum: int, _: Any) -> None:
            # A process-group signal can arrive twice at once; only a later one forces the stop.
            if self.stopping.is_set() and first_at and time.monotonic() - first_at[0] > 1.0:
                log.warning("second signal: stopping without draining", signal=signum)
                self.hard_stop.set()
            elif not self.stopping.is_set():
                log.info("signal received: draining", signal=signum)
                first_at.append(time.monotonic())
                self.stopping.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        s = self.settings
        k = s.kafka
        server = serve(self.metrics, self.health, s.metrics_host, s.metrics_port) if s.metrics_port else None
        self.redis = connect(s.redis)
        self.publisher = Publisher(self.redis, s.redis, self.engine.name, transactional=not s.redis.cluster)
        self.pool = self._new_pool()
        self.consumer = self._connect_consumer()
        self.producer = KafkaProducer(acks="all", retries=5, linger_ms=0, **k.client_kwargs())
        self.consumer.subscribe([k.topic], listener=_Rebalance(self))
        inference = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        inference.start()
        log.info("worker started", topic=k.topic, group=k.group, model=self.engine.name, backend=self.engine.backend,
                 max_batch=s.batch.max_batch, max_delay_ms=s.batch.max_delay_ms, decode_workers=s.decode.workers)
        try:
            self._main_loop()
        finally:
            self._shutdown(inference)
            if server is not None:
                server.shutdown()

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
            try:
                records = self.consumer.poll(timeout_ms=50, max_records=self._poll_budget())
            except KafkaError as exc:
                self.health.ready, self.health.reason = False, f"poll failed: {exc}"
                log.warning("poll failed", error=str(exc))
                time.sleep(0.5)
                continue
            for tp, batch in records.items():
                for record in batch:
                    self._accept(tp, record)
            self._pump_decodes()
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

    def _drain_expired(self, limit_s: float = 60.0) -> bool:
        if self._drain_started is None:
            self._drain_started = time.monotonic()
        return time.monotonic() - self._drain_started > limit_s

    def _shutdown(self, inference: threading.Thread) -> None:
        self.batcher.close()
        inference.join(timeout=30)
        self._finish_completed()
        try:
            self._commit()
        except KafkaError as exc:
            log.warning("final commit failed", error=str(exc))
        if self.consumer is not None:
            self.consumer.close(autocommit=False)  # leaves the group: partitions move at once
        if self.producer is not None:
            self.producer.close(timeout=5)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped", in_flight=self.offsets.in_flight, **self.totals)

    # --- intake ----------------------------------------------------------------------

    def _poll_budget(self) -> int:
        free = self.settings.batch.max_inflight_messages - self.offsets.in_flight
        return max(1, min(self.settings.kafka.max_poll_records, free))

    def _accept(self, tp: TopicPartition, record: Any) -> None:
        key = (tp.topic, tp.partition)
        self.offsets.add(tp.topic, tp.partition, record.offset)
        self.totals["records"] += 1
        try:
            message = contracts.parse_message(tp.topic, tp.partition, record.offset, record.key, record.value, record.headers,
                                              self.settings.decode.max_message_bytes)
        except contracts.ContractError as exc:
            self._dead_letter(record, tp, exc.error_type, str(exc))
            self.offsets.mark_done(tp.topic, tp.partition, record.offset)
            return
        inflight = InFlight(message, self.epochs.get(key, 0))
        assert self.pool is not None
        inflight.future = self.pool.submit(decode_segment, self._decode_request(message))
        self.queues.setdefault(key, deque()).append(inflight)
        self.metrics.messages.labels("polled").inc()
        self.totals["polled"] += 1

    def _decode_request(self, message: contracts.SegmentMessage) -> DecodeRequest:
        return decode_request(self.settings, self.engine, message.payload, message.content_type, message.segment_start_ms,
                              message.segment_duration_ms)

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.settings.decode.workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_decoder_process_init, initargs=(self.settings.decode.max_memory_mb,))

    def _pump_decodes(self) -> None:
        """Hand decoded messages to the batcher in offset order per partition."""
        for key, pending in self.queues.items():
            while pending and pending[0].future is not None and pending[0].future.done():
                inflight = pending.popleft()
                msg = inflight.message
                assert inflight.future is not None
                try:
                    result = inflight.future.result()
                except DecodeError as exc:
                    self._dead_letter_message(msg, exc.error_type, str(exc))
                    self.offsets.mark_done(*key, msg.offset)
                    continue
                except cf.process.BrokenProcessPool as exc:
                    # A decoder process died (hostile input crashing FFmpeg, or the OOM killer). Every
                    # message in flight fails with it, so each gets one more try in a fresh pool and
                    # only a message that breaks the pool again is quarantined.
                    if inflight.attempts >= 2:
                        self._dead_letter_message(msg, "decode-error", f"decoder process crashed twice: {exc}")
                        self.offsets.mark_done(*key, msg.offset)
                        continue
                    pending.appendleft(inflight)
                    self._rebuild_pool()
                    return
                self.metrics.decode_seconds.observe(result.seconds)
                self.metrics.frames_decoded.inc(result.decoded)
                self.metrics.frames_sampled.inc(len(result.frames))
                if not result.frames:
                    self.offsets.mark_done(*key, msg.offset)
                    self.metrics.messages.labels("empty").inc()
                    continue
                inflight.remaining = len(result.frames)
                for frame in result.frames:
                    self.batcher.put(FrameItem(inflight, frame.pts_ms, frame.pixels))

    def _rebuild_pool(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()
        for pending in self.queues.values():
            for inflight in pending:
                future = inflight.future
                if future is not None and future.done() and not future.cancelled() and isinstance(future.exception(), cf.process.BrokenProcessPool):
                    inflight.attempts += 1
                    inflight.future = self.pool.submit(decode_segment, self._decode_request(inflight.message))

    # --- dead letters ----------------------------------------------------------------

    def _dead_letter(self, record: Any, tp: TopicPartition, error_type: str, error: str) -> None:
        self._send_dlq(record.key, record.value, record.headers, tp.topic, tp.partition, record.offset, error_type, error)

    def _dead_letter_message(self, msg: contracts.SegmentMessage, error_type: str, error: str) -> None:
        self._send_dlq(msg.key, msg.payload, msg.headers, msg.topic, msg.partition, msg.offset, error_type, error)

    def _send_dlq(self, key: bytes | None, value: bytes | None, headers: Any, topic: str, partition: int, offset: int,
                  error_type: str, error: str) -> None:
        assert self.producer is not None
        dlq_headers = contracts.dlq_headers(error_type, error, topic, partition, offset, headers)
        delay = 0.2
        while True:
            try:
                # Wait for the broker's ack: the offset is committed right after, so the copy must exist.
                self.producer.send(self.settings.kafka.dlq_topic, key=key, value=value or b"", headers=dlq_headers).get(timeout=10)
                break
            except KafkaError as exc:
                if self.hard_stop.is_set():
                    raise
                log.warning("dead-letter write failed, retrying", error=str(exc), topic=topic, partition=partition, offset=offset)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.metrics.dlq.labels(error_type).inc()
        self.metrics.messages.labels("dead-lettered").inc()
        stream = key.decode("utf-8", "replace")[:80] if key else None
        log.warning("message dead-lettered", error_type=error_type, error=error[:200], stream=stream, partition=partition, offset=offset)

    # --- inference thread ------------------------------------------------------------

    def _inference_loop(self) -> None:
        while True:
            batch = self.batcher.next_batch(timeout=0.2)
            self.metrics.queue_depth.labels("batcher").set(len(self.batcher))
            if batch is None:
                if self.batcher.closed:
                    return
                continue
            batch = [item for item in batch if self._current(item.inflight)]
            if not batch:
                continue
            started = time.monotonic()
            if self.settings.faults.infer_delay_ms:
                self.hard_stop.wait(self.settings.faults.infer_delay_ms / 1000)
            probabilities = self.engine.infer(np.stack([item.pixels for item in batch]))
            self.metrics.inference_seconds.observe(time.monotonic() - started)
            self.metrics.batch_size.observe(len(batch))
            violent = probabilities[:, self.engine.violent_index]
            if not self._publish(batch, violent):
                return
            now = time.time()
            for item in batch:
                item.inflight.remaining -= 1
                if item.inflight.remaining == 0:
                    self.completions.put(item.inflight)
                    produced = item.inflight.message.produced_at_ms
                    if produced:
                        self.metrics.e2e_seconds.observe(max(0.0, now - produced / 1000))

    def _current(self, inflight: InFlight) -> bool:
        key = (inflight.message.topic, inflight.message.partition)
        with self._epoch_lock:
            return self.epochs.get(key, 0) == inflight.epoch and key in self.offsets.partitions

    def _publish(self, batch: list[FrameItem], violent: np.ndarray) -> bool:
        """Score and write one batch; retries until Redis takes it. False when stopping hard."""
        with self._epoch_lock:
            forget, self._revoked_streams = self._revoked_streams, set()
        for stream_id in forget:
            self.scorer.forget(stream_id)
        delay = 0.1
        scored: list[ScoredFrame] | None = None
        while not self.hard_stop.is_set():
            try:
                if scored is None:
                    scored = self._score(batch, violent)
                self.publisher.write(scored)
                if not self.redis_ok:
                    log.info("Redis writes recovered")
                self.redis_ok = True
                self.metrics.frames_scored.inc(len(scored))
                self.totals["scored_frames"] += len(scored)
                for item in scored:
                    if item.score.alert_event:
                        self.metrics.alerts.labels(item.score.alert_event).inc()
                        log.info("alert", alert=item.score.alert_event, stream=item.score.stream_id, ema=round(item.score.ema, 3),
                                 pts_ms=item.score.pts_ms, partition=item.partition, offset=item.offset)
                return True
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                self.redis_ok = False
                self.metrics.redis_errors.inc()
                log.warning("Redis write failed, retrying", error=str(exc), retry_in_s=round(delay, 2), frames=len(batch))
                self.hard_stop.wait(delay)
                delay = min(delay * 2, 5.0)
        return False

    def _score(self, batch: list[FrameItem], violent: np.ndarray) -> list[ScoredFrame]:
        scored = []
        for item, probability in zip(batch, violent, strict=True):
            msg = item.inflight.message
            if not self.scorer.knows(msg.stream_id):
                state = self.publisher.read_state(msg.stream_id)
                if state:
                    self.scorer.restore(msg.stream_id, float(state.get(contracts.F_EMA, 0.0)), int(state.get(contracts.F_PTS_MS, 0)),
                                        state.get(contracts.F_ALERT) == "1", int(state.get(contracts.F_FRAMES, 0)))
            frame_score = self.scorer.update(msg.stream_id, item.pts_ms, float(probability))
            if frame_score is None:
                self.metrics.frames_replayed.inc()
                self.totals["replayed_frames"] += 1
                continue
            scored.append(ScoredFrame(frame_score, msg.partition, msg.offset))
        return scored

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
        ready = assigned > 0 and self.redis_ok and broker_ok
        self.health.ready = ready
        self.health.reason = ("ok" if ready else "broker unreachable" if not broker_ok else
                              "no partitions assigned" if assigned == 0 else "Redis writes failing")
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

    # --- rebalance (called inside poll, on the main thread) ---------------------------

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in revoked}
        self._pump_decodes()
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
                    if inflight.future is not None:
                        inflight.future.cancel()
                    streams.add(inflight.message.stream_id)
                self.offsets.forget(*key)
            self._revoked_streams |= streams
        dropped = self.batcher.drop(lambda item: (item.inflight.message.topic, item.inflight.message.partition) in keys)
        log.info("partitions revoked", partitions=sorted(p for _, p in keys), dropped_frames=dropped)
        self.metrics.assigned.set(len(self.consumer.assignment()) - len(keys) if self.consumer else 0)

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            offset = self._resume_from.pop((tp.topic, tp.partition), None)
            if offset is not None and self.consumer is not None:
                self.consumer.seek(tp, offset)  # local: allowed on the network thread
        self._resume_from.clear()  # partitions that went elsewhere resume from their commits there
        self.paused = False
        self.metrics.paused.set(0)
        self.metrics.assigned.set(len(assigned))
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))


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
        segment_duration_ms=segment_duration_ms, strict=d.strict,
    )


def _decoder_process_init(max_memory_mb: int = 0) -> None:
    # Ctrl-C and SIGTERM reach the whole process group; decoders must outlive them so the parent
    # can drain, and the parent shuts them down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if max_memory_mb:
        import resource

        # A decompression bomb then fails its allocation (an FFmpeg error or MemoryError, hence a
        # dead letter) instead of taking the host's memory; a crash is retried once, then quarantined.
        limit = max_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_worker(settings: FrameWatchSettings) -> int:
    from engines.api import load

    if settings.model is None:
        raise SystemExit("framewatch worker: --model ARTIFACT_DIR is required (or FRAMEWATCH_MODEL / model: in the config file)")
    engine = load(settings.model, settings.backend, intra_op_threads=settings.intra_op_threads)
    worker = Worker(settings, engine)
    worker.install_signal_handlers()
    log.info("starting", pid=os.getpid())
    worker.run()
    return 0
