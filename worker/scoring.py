"""Per-stream scores and the stream-time model: latest probability, EMA with a half-life in
stream time, the max over a recent window, alerts with hysteresis, broadcasts and replays.

Pure logic, no I/O: the caller feeds frames of one stream in Kafka order and writes the result.

**Replays are identified by Kafka position, not by time.** A stream's state keeps, per partition,
the position of the last frame written to Redis: (offset, frame index inside the message, the
record's timestamp). A frame at or before that position is a replay of a message read again
after a crash or a rebalance, and is skipped. The record timestamp guards the one case where
offsets go backwards without a replay (a topic deleted and created again): such a frame is newer
than the stored one and is scored. Frames of new messages are never skipped, whatever their
stream times (docs/contracts.md, "Stream time").

**Stream time.** A message with ``segment-start-ms`` is *timed*: its frames sit at that start
plus their offset inside the segment. A message without it is *untimed*: it starts at
``captured-at-ms`` (else the record timestamp), but never before the end of the stream's
previous message, so independently encoded segments and stills that each start at 0 keep
increasing. A timed message whose stream time goes backwards on the partition the stream was
last read from, or a changed ``broadcast-id`` header, starts a **new broadcast**: the EMA and the
recent window start afresh, and an open alert of the old broadcast is cleared with reason
``new-broadcast``. A frame that is earlier than the last one but not a new broadcast (a stream
whose messages arrive over two partitions) is *late*: written to the history, counted, without
moving the EMA backwards in time.

Scoring is transactional: :meth:`StreamScorer.begin` works on copies of the states, and only
:meth:`Scoring.commit`, called after Redis took the batch, makes them the scorer's.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from framewatch.worker.contracts import ALERT_CLEAR, ALERT_RAISE

# Alert event reasons (docs/contracts.md).
REASON_ABOVE_ON = "ema-above-alert-on"
REASON_BELOW_OFF = "ema-below-alert-off"
REASON_NEW_BROADCAST = "new-broadcast"
REASON_STALE = "stale"

SKIP_REPLAY = "replay"


@dataclass(frozen=True)
class ScoringParams:
    ema_half_life_s: float = 10.0
    recent_window_s: float = 60.0
    alert_on: float = 0.7
    alert_off: float = 0.5


@dataclass(frozen=True)
class MessageTime:
    """Where one Kafka message and its frames sit, in Kafka and in stream time."""

    partition: int
    offset: int
    record_ts_ms: int = -1  # the Kafka record timestamp; -1 when the broker gave none
    start_ms: int | None = None  # segment-start-ms: the producer's stream time (a timed message)
    hint_ms: int | None = None  # captured-at-ms, else the record timestamp (untimed messages)
    duration_ms: int = 0  # the message's length in stream time (0 for a still image)
    broadcast: str | None = None  # the broadcast-id header


@dataclass
class StreamState:
    ema: float | None = None
    last_pts_ms: int | None = None
    alert: bool = False
    frames: int = 0
    recent: deque[tuple[int, float]] = field(default_factory=deque)
    broadcast: str = "1"
    broadcast_seq: int = 1
    broadcast_from_header: bool = False
    # partition -> (offset, frame index, record timestamp) of the last frame written.
    positions: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    last_partition: int | None = None
    # The message being scored: (partition, offset) and the stream time it starts at, so that a
    # message written in part before a crash keeps the same times when it is read again.
    message: tuple[int, int, int] | None = None  # (partition, offset, record timestamp)
    message_base_ms: int = 0
    end_ms: int | None = None  # where the next untimed message may start
    touched_at: float = 0.0  # monotonic clock of the last update (for forgetting quiet streams)


@dataclass(frozen=True)
class AlertEvent:
    event: str  # ALERT_RAISE | ALERT_CLEAR
    reason: str
    broadcast: str


@dataclass(frozen=True)
class FrameScore:
    stream_id: str
    pts_ms: int
    score: float
    ema: float
    max_recent: float
    alert: bool
    events: tuple[AlertEvent, ...] = ()
    broadcast: str = "1"
    late: bool = False

    @property
    def alert_event(self) -> str | None:
        """The last event of this frame ("raise" / "clear"), for logs."""
        return self.events[-1].event if self.events else None


def _newer(position: tuple[int, int, int], offset: int, index: int, record_ts_ms: int) -> bool:
    """Whether a frame is past the stored position of its partition (not a replay)."""
    stored_offset, stored_index, stored_ts = position
    if (offset, index) > (stored_offset, stored_index):
        return True
    # At or before the stored position: a replay, unless the record is newer than the stored one
    # (offsets started again: the topic was recreated). Equal timestamps are a replay.
    return record_ts_ms >= 0 and stored_ts >= 0 and record_ts_ms > stored_ts


class Scoring:
    """One batch's scoring on copies of the stream states; :meth:`commit` keeps them."""

    def __init__(self, scorer: StreamScorer) -> None:
        self.scorer = scorer
        self.states: dict[str, StreamState] = {}

    def state(self, stream_id: str) -> StreamState:
        state = self.states.get(stream_id)
        if state is None:
            known = self.scorer.streams.get(stream_id)
            state = self.states[stream_id] = copy.deepcopy(known) if known is not None else StreamState()
        return state

    def update(self, stream_id: str, msg: MessageTime, index: int, offset_ms: int, score: float) -> FrameScore | str:
        """Fold in frame ``index`` of a message, ``offset_ms`` after the message's start;
        returns the frame's score, or the reason it is skipped (:data:`SKIP_REPLAY`)."""
        p = self.scorer.params
        state = self.state(stream_id)
        position = state.positions.get(msg.partition)
        if position is not None and not _newer(position, msg.offset, index, msg.record_ts_ms):
            return SKIP_REPLAY
        events: list[AlertEvent] = []
        if state.frames == 0 and msg.broadcast is not None and not state.broadcast_from_header:
            state.broadcast, state.broadcast_from_header = msg.broadcast, True  # a new stream adopts the producer's name
        identity = (msg.partition, msg.offset, msg.record_ts_ms)
        if state.message != identity:
            base = self._message_base(state, msg)
            if self._new_broadcast(state, msg, base):
                if state.alert:
                    events.append(AlertEvent(ALERT_CLEAR, REASON_NEW_BROADCAST, state.broadcast))
                self._start_broadcast(state, msg)
            state.message, state.message_base_ms = identity, base
        pts_ms = state.message_base_ms + offset_ms
        late = state.last_pts_ms is not None and pts_ms < state.last_pts_ms
        if state.ema is None or state.last_pts_ms is None:
            ema = score
        else:
            dt_s = max(0, pts_ms - state.last_pts_ms) / 1000.0  # a late frame does not move time back
            weight = 1.0 - math.pow(0.5, dt_s / p.ema_half_life_s)
            ema = state.ema + weight * (score - state.ema)
        state.ema = ema
        state.last_pts_ms = pts_ms if state.last_pts_ms is None else max(state.last_pts_ms, pts_ms)
        state.frames += 1
        state.positions[msg.partition] = (msg.offset, index, msg.record_ts_ms)
        state.last_partition = msg.partition
        end = state.message_base_ms + max(msg.duration_ms, offset_ms + 1)
        state.end_ms = end if state.end_ms is None else max(state.end_ms, end)
        state.touched_at = self.scorer.clock()
        if not late:
            state.recent.append((pts_ms, score))
            horizon = pts_ms - p.recent_window_s * 1000.0
            while state.recent and state.recent[0][0] < horizon:
                state.recent.popleft()
        if not state.alert and ema >= p.alert_on:
            state.alert = True
            events.append(AlertEvent(ALERT_RAISE, REASON_ABOVE_ON, state.broadcast))
        elif state.alert and ema < p.alert_off:
            state.alert = False
            events.append(AlertEvent(ALERT_CLEAR, REASON_BELOW_OFF, state.broadcast))
        max_recent = max((s for _, s in state.recent), default=score)
        return FrameScore(stream_id, pts_ms, score, ema, max(max_recent, score) if late else max_recent, state.alert,
                          tuple(events), state.broadcast, late)

    @staticmethod
    def _message_base(state: StreamState, msg: MessageTime) -> int:
        if msg.start_ms is not None:
            return msg.start_ms
        hint = msg.hint_ms if msg.hint_ms is not None else (msg.record_ts_ms if msg.record_ts_ms >= 0 else 0)
        return hint if state.end_ms is None else max(hint, state.end_ms)

    @staticmethod
    def _new_broadcast(state: StreamState, msg: MessageTime, base: int) -> bool:
        if state.last_pts_ms is None:
            return msg.broadcast is not None and msg.broadcast != state.broadcast and state.frames > 0
        if msg.broadcast is not None:
            # The producer names its broadcasts: only a change of name is a restart.
            return msg.broadcast != state.broadcast
        went_back = msg.start_ms is not None and base < state.last_pts_ms
        return went_back and msg.partition == state.last_partition

    @staticmethod
    def _start_broadcast(state: StreamState, msg: MessageTime) -> None:
        state.broadcast_seq += 1
        state.broadcast = msg.broadcast if msg.broadcast is not None else str(state.broadcast_seq)
        state.broadcast_from_header = msg.broadcast is not None
        state.ema, state.last_pts_ms, state.alert, state.end_ms = None, None, False, None
        state.recent = deque()

    def commit(self, streams: set[str] | None = None) -> None:
        """Redis holds the batch (or the named streams of it): keep their new states."""
        for stream_id, state in self.states.items():
            if streams is None or stream_id in streams:
                self.scorer.streams[stream_id] = state


class StreamScorer:
    """The worker's cache of stream states; Redis is the truth (re-read when a stream is unknown)."""

    def __init__(self, params: ScoringParams, clock: Callable[[], float] = time.monotonic) -> None:
        self.params = params
        self.clock = clock
        self.streams: dict[str, StreamState] = {}

    def knows(self, stream_id: str) -> bool:
        return stream_id in self.streams

    def restore(self, stream_id: str, state: StreamState) -> None:
        """Continue from the state another worker (or this one before a restart) left in Redis."""
        state.touched_at = self.clock()
        self.streams[stream_id] = state

    def forget(self, stream_id: str) -> None:
        self.streams.pop(stream_id, None)

    def forget_all(self) -> None:
        self.streams.clear()

    def forget_idle(self, idle_s: float) -> list[str]:
        """Drop streams not updated for ``idle_s``; they are re-read from Redis if they return."""
        cutoff = self.clock() - idle_s
        quiet = [stream_id for stream_id, state in self.streams.items() if state.touched_at < cutoff]
        for stream_id in quiet:
            del self.streams[stream_id]
        return quiet

    def begin(self) -> Scoring:
        return Scoring(self)

    def update(self, stream_id: str, msg: MessageTime, index: int, offset_ms: int, score: float) -> FrameScore | str:
        """Score one frame and keep the result at once (for tests and tools that write nothing)."""
        scoring = self.begin()
        result = scoring.update(stream_id, msg, index, offset_ms, score)
        scoring.commit()
        return result
