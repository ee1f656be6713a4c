"""The inference thread: batcher → engine → scorer → Redis, one transaction per batch.

Its promises (docs/reliability.md):

- **Scoring is applied only when Redis took it.** A batch is scored on copies of the stream states;
  they become the scorer's only after the write succeeded. A write that fails is scored again
  from the states Redis holds, so frames already written are skipped as replays and the others
  are written: a Redis error in the middle of a batch loses nothing.
- **Ownership is checked on every attempt**: frames of a partition that moved to another worker
  while the batch waited for Redis are dropped, not written behind the new owner's back.
- **What is retried**: connection errors, timeouts and cluster fail-overs, with backoff, for as long
  as they last (readiness says so, partitions pause). A transaction that Redis refuses as a whole
  for a stream's keys (a key of the wrong type, an ACL on its keys) is written again stream by
  stream: the refused stream's messages in the batch are dead-lettered (``redis-rejected``), the
  other streams are written. A refusal of everything (OOM, READONLY, MISCONF) is retried, with
  backoff, for as long as it lasts, like an outage.
- **It never dies quietly**: an exception it does not expect (the engine, a bug) is logged,
  counted, turns ``/healthz`` unhealthy and stops the process with a non-zero status, so its
  supervisor restarts it; at-least-once delivery makes the restart safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import redis.exceptions as rex

from framewatch.logs import get_logger
from framewatch.worker import contracts as c
from framewatch.worker.batcher import DynamicBatcher
from framewatch.worker.evidence import EvidenceRecorder
from framewatch.worker.metrics import Health, WorkerMetrics
from framewatch.worker.redis_io import TRANSIENT_ERRORS, Publisher, ScoredFrame, parse_state, stream_specific
from framewatch.worker.scoring import SKIP_REPLAY, FrameScore, MessageTime, Scoring, StreamScorer

log = get_logger("worker")

ERROR_REDIS_REJECTED = "redis-rejected"


class Message(Protocol):
    """What the inference thread needs of a message in flight (worker.service.InFlight)."""

    stream_id: str
    msg_time: MessageTime
    remaining: int
    finished_frames: set[int]
    produced_at_ms: int | None
    message: Any  # contracts.SegmentMessage


def pending_error(refusal: Exception | None) -> rex.ResponseError:
    return rex.ResponseError(f"Redis refused every stream of the batch: {refusal}")


@dataclass(frozen=True)
class FrameItem:
    inflight: Any  # worker.service.InFlight
    index: int  # the frame's index among the message's sampled frames
    offset_ms: int  # stream time after the message's start
    pixels: np.ndarray
    evidence: bytes | None = None  # the frame as JPEG at evidence size (evidence.backend set)


class RateLimitedLog:
    """One log line per (stream, what) per ``interval_s``, with the count since the last one."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def note(self, stream: str, what: str, **fields: Any) -> None:
        key = (stream, what)
        self._counts[key] = self._counts.get(key, 0) + 1
        now = self.clock()
        if now - self._last.get(key, -1e18) >= self.interval_s:
            log.warning(what, stream=stream, count=self._counts.pop(key), **fields)
            self._last[key] = now
        if len(self._last) > 10_000:  # bounded: forget the oldest half
            for old in sorted(self._last, key=self._last.__getitem__)[:5_000]:
                self._last.pop(old, None)
                self._counts.pop(old, None)


class InferenceLoop:
    def __init__(self, *, batcher: DynamicBatcher[FrameItem], engine: Any, scorer: StreamScorer, publisher: Publisher,
                 metrics: WorkerMetrics, health: Health, is_current: Callable[[Any], bool], done: Callable[[Any], None],
                 reject: Callable[[Any, str, str], None], take_invalidations: Callable[[], tuple[bool, set[str]]],
                 hard_stop: threading.Event, fatal: Callable[[str], None],
                 stale_after_s: float = 120.0, infer_delay_ms: float = 0.0, infer_fail_after: int | None = None,
                 recorder: EvidenceRecorder | None = None) -> None:
        self.batcher = batcher
        self.engine = engine
        self.scorer = scorer
        self.publisher = publisher
        self.metrics = metrics
        self.health = health
        self.is_current = is_current
        self.done = done
        self.reject = reject
        self.take_invalidations = take_invalidations
        self.hard_stop = hard_stop
        self.fatal = fatal
        self.stale_after_s = stale_after_s
        self.sweep_interval_s = min(10.0, stale_after_s / 4)
        self.infer_delay_ms = infer_delay_ms
        self.infer_fail_after = infer_fail_after
        self.recorder = recorder
        self.batches = 0
        self.redis_ok = True
        self.skips = RateLimitedLog()
        self.totals = {"scored_frames": 0, "replayed_frames": 0}
        self._last_sweep = time.monotonic()

    def run(self) -> None:
        """The thread's body: any exception it does not handle ends the process (see the module doc)."""
        try:
            self._loop()
        except BaseException as exc:
            log.exception("inference thread died", error=f"{exc.__class__.__name__}: {exc}")
            self.metrics.thread_deaths.labels("inference").inc()
            self.fatal(f"inference thread died: {exc.__class__.__name__}: {exc}")

    def _loop(self) -> None:
        while True:
            self.health.beat("inference")
            batch = self.batcher.next_batch(timeout=0.2)
            self.metrics.queue_depth.labels("batcher").set(len(self.batcher))
            self._upkeep()
            if batch is None:
                if self.batcher.closed:
                    return
                continue
            batch = [item for item in batch if self.is_current(item.inflight)]
            if not batch:
                continue
            started = time.monotonic()
            if self.infer_delay_ms:
                self.hard_stop.wait(self.infer_delay_ms / 1000)
            if self.infer_fail_after is not None and self.batches >= self.infer_fail_after:
                raise RuntimeError("faults.infer_fail_after: the engine failed (injected)")
            self.batches += 1
            probabilities = self.engine.infer(np.stack([item.pixels for item in batch]))
            self.metrics.inference_seconds.observe(time.monotonic() - started)
            self.metrics.batch_size.observe(len(batch))
            violent = np.asarray(probabilities)[:, self.engine.violent_index]
            if not self._publish(batch, [float(v) for v in violent]):
                return

    # --- upkeep ------------------------------------------------------------------------

    def _upkeep(self) -> None:
        forget_all, streams = self.take_invalidations()
        if forget_all:
            self.scorer.forget_all()  # partitions were assigned: what another worker wrote is re-read
        for stream_id in streams:
            self.scorer.forget(stream_id)
        now = time.monotonic()
        if now - self._last_sweep < self.sweep_interval_s:
            return
        self._last_sweep = now
        # Quiet streams leave memory before the sweep could clear their alert in Redis, so a stream
        # that returns is read back, never continued from a stale cache.
        self.scorer.forget_idle(self.stale_after_s / 2)
        self.metrics.streams_cached.set(len(self.scorer.streams))
        if self.recorder is not None:
            try:
                self.recorder.store.sweep()
            except Exception as exc:
                log.warning("evidence retention sweep failed; next time", error=f"{exc.__class__.__name__}: {exc}")
        try:
            removed, cleared = self.publisher.sweep(self.stale_after_s)
        except Exception as exc:  # upkeep is retried at the next sweep; it never stops scoring
            log.warning("ranking upkeep failed; next time", error=f"{exc.__class__.__name__}: {exc}")
            return
        for event in cleared:
            self.metrics.alerts.labels("clear").inc()
            log.info("alert", alert="clear", reason=event["reason"], stream=event["stream"])
        if removed:
            log.debug("stale streams left the ranking", removed=removed)

    # --- scoring and writing -----------------------------------------------------------

    def _publish(self, batch: list[FrameItem], violent: list[float]) -> bool:
        """Score and write one batch. False only when stopping hard (the batch is then not done)."""
        pending = list(zip(batch, violent, strict=True))
        delay = 0.1
        by_stream = False
        while pending:
            self.health.beat("inference")
            if self.hard_stop.is_set():
                return False
            pending = [(item, p) for item, p in pending if self._still_ours(item)]
            if not pending:
                return True
            try:
                if by_stream:
                    pending = self._write_by_stream(pending)
                    if pending:
                        raise pending_error(self._last_refusal)
                else:
                    self._write(pending)
                if not self.redis_ok:
                    log.info("Redis writes recovered")
                self.redis_ok = True
                return True
            except TRANSIENT_ERRORS as exc:
                what, error = "Redis unreachable", exc
            except rex.ResponseError as exc:
                what, error = "Redis refused the batch", exc
                if stream_specific(exc) and not by_stream:
                    by_stream = True  # find the streams it refuses: those are dead-lettered, the rest written
                    self._invalidate({item.inflight.stream_id for item, _ in pending})
                    continue
            self.redis_ok = False
            self.metrics.redis_errors.inc()
            log.warning(f"{what}, retrying", error=str(error)[:300], retry_in_s=round(delay, 2), frames=len(pending))
            self._invalidate({item.inflight.stream_id for item, _ in pending})
            self.hard_stop.wait(delay)
            delay = min(delay * 2, 5.0)
        return True

    def _still_ours(self, item: FrameItem) -> bool:
        if self.is_current(item.inflight):
            return True
        self.metrics.frames_skipped.labels("partition-moved").inc()
        return False

    def _invalidate(self, streams: set[str]) -> None:
        for stream_id in streams:
            self.scorer.forget(stream_id)

    def _write(self, pending: list[tuple[FrameItem, float]]) -> None:
        """One attempt at the whole batch; streams whose own writes Redis refused are dead-lettered."""
        frames, finished, scoring, images = self._score(pending)
        # Evidence first: the alerts of this batch name it, so it is in the store before they are.
        prepared = self.recorder.prepare((f.score, *image) for f, image in zip(frames, images, strict=True)) if self.recorder is not None else None
        failed = self.publisher.write(frames, {f.score.stream_id: scoring.states[f.score.stream_id] for f in frames}, prepared)
        if self.recorder is not None and prepared is not None:
            self.recorder.commit(prepared)
        scoring.commit(set(scoring.states) - set(failed))
        for stream_id, error in failed.items():
            self._reject_stream(stream_id, pending, error)
        self._account(frames, finished, failed)

    _last_refusal: Exception | None = None

    def _write_by_stream(self, pending: list[tuple[FrameItem, float]]) -> list[tuple[FrameItem, float]]:
        """Each stream in its own transaction. A stream Redis refuses with WRONGTYPE (a key of
        another type under its name) is dead-lettered. A NOPERM refusal is dead-lettered only when
        another stream of the batch could be written; when every stream is refused, the refusal is
        Redis-wide (an ACL on all keys) and is retried like an outage. Returns what is left to
        retry; written streams leave ``pending`` at once, so a retry never finishes them twice."""
        streams: dict[str, list[tuple[FrameItem, float]]] = {}
        for item, p in pending:
            streams.setdefault(item.inflight.stream_id, []).append((item, p))
        refused: dict[str, Exception] = {}
        written = 0
        for stream_id, items in streams.items():
            try:
                self._write(items)
                written += 1
            except rex.ResponseError as exc:
                if isinstance(exc, TRANSIENT_ERRORS) or not stream_specific(exc):
                    raise
                refused[stream_id] = exc
        left: list[tuple[FrameItem, float]] = []
        for stream_id, refusal in refused.items():
            if "WRONGTYPE" in str(refusal) or written > 0:
                self._reject_stream(stream_id, streams[stream_id], refusal)
            else:
                left += streams[stream_id]
                self._last_refusal = refusal
        return left

    def _reject_stream(self, stream_id: str, pending: list[tuple[FrameItem, float]], error: Exception) -> None:
        messages = {id(item.inflight): item.inflight for item, _ in pending if item.inflight.stream_id == stream_id}
        self.metrics.frames_skipped.labels(ERROR_REDIS_REJECTED).inc(sum(1 for item, _ in pending if item.inflight.stream_id == stream_id))
        self.scorer.forget(stream_id)
        for inflight in messages.values():
            self.reject(inflight, ERROR_REDIS_REJECTED, f"Redis refused the writes of stream {stream_id!r}: {error}")

    def _score(self, pending: list[tuple[FrameItem, float]]) -> tuple[list[ScoredFrame], list[FrameItem], Scoring,
                                                                       list[tuple[bytes | None, tuple[tuple[str, str], ...], str]]]:
        unknown = list(dict.fromkeys(item.inflight.stream_id for item, _ in pending
                                     if not self.scorer.knows(item.inflight.stream_id)))
        for stream_id, (fields, state) in self.publisher.read_states(unknown).items():
            if state is None:
                continue
            if self.recorder is not None:
                self.recorder.restore_metadata(stream_id, fields.get(c.F_METADATA))
            _, bad = parse_state(fields)
            if bad:
                self.metrics.state_errors.inc(len(bad))
                self.skips.note(stream_id, "stream state fields unreadable; continuing without them", fields=bad)
            self.scorer.restore(stream_id, state)
        scoring = self.scorer.begin()
        frames: list[ScoredFrame] = []
        finished: list[FrameItem] = []
        images: list[tuple[bytes | None, tuple[tuple[str, str], ...], str]] = []
        for item, probability in pending:
            msg = item.inflight
            result = scoring.update(msg.stream_id, msg.msg_time, item.index, item.offset_ms, probability)
            finished.append(item)
            if isinstance(result, FrameScore):
                frames.append(ScoredFrame(result, msg.msg_time.partition, msg.msg_time.offset))
                images.append((item.evidence, msg.message.metadata, f"{msg.msg_time.partition}:{msg.msg_time.offset}"))
            else:
                self._skipped(msg, result)
        return frames, finished, scoring, images

    def _skipped(self, msg: Any, reason: str) -> None:
        self.metrics.frames_skipped.labels(reason).inc()
        if reason == SKIP_REPLAY:
            self.metrics.frames_replayed.inc()
            self.totals["replayed_frames"] += 1
        self.skips.note(msg.stream_id, f"frames skipped: {reason}", partition=msg.msg_time.partition, offset=msg.msg_time.offset)

    def _account(self, frames: list[ScoredFrame], finished: list[FrameItem], failed: dict[str, Exception]) -> None:
        written = [f for f in frames if f.score.stream_id not in failed]
        self.metrics.frames_scored.inc(len(written))
        self.totals["scored_frames"] += len(written)
        for f in written:
            s = f.score
            if s.late:
                self.metrics.frames_late.inc()
            for event in s.events:
                self.metrics.alerts.labels(event.event).inc()
                log.info("alert", alert=event.event, reason=event.reason, stream=s.stream_id, broadcast=event.broadcast,
                         ema=round(s.ema, 3), pts_ms=s.pts_ms, partition=f.partition, offset=f.offset)
        for item in finished:
            if item.inflight.stream_id not in failed:
                self._finish(item)

    def _finish(self, item: FrameItem) -> None:
        inflight = item.inflight
        if item.index in inflight.finished_frames:
            return  # counted once, whatever retries happen
        inflight.finished_frames.add(item.index)
        inflight.remaining -= 1
        if inflight.remaining == 0:
            self.done(inflight)
            produced = inflight.produced_at_ms
            if produced:
                self.metrics.e2e_seconds.observe(max(0.0, time.time() - produced / 1000))


