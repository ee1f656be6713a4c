"""Per-stream scores: latest probability, EMA with a half-life in stream time, the max over a
recent window, and alerts with hysteresis. Pure logic: the caller feeds frames in stream order."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from worker.contracts import ALERT_CLEAR, ALERT_RAISE


@dataclass(frozen=True)
class ScoringParams:
    ema_half_life_s: float = 10.0
    recent_window_s: float = 60.0
    alert_on: float = 0.7
    alert_off: float = 0.5
    # A frame this far *before* the stream's last one means a new broadcast, not a replay.
    restart_gap_ms: int = 10 * 60 * 1000


@dataclass
class StreamState:
    ema: float | None = None
    last_pts_ms: int | None = None
    alert: bool = False
    frames: int = 0
    recent: deque[tuple[int, float]] = field(default_factory=deque)


@dataclass(frozen=True)
class FrameScore:
    stream_id: str
    pts_ms: int
    score: float
    ema: float
    max_recent: float
    alert: bool
    alert_event: str | None  # "raise" | "clear" | None


class StreamScorer:
    def __init__(self, params: ScoringParams) -> None:
        self.params = params
        self.streams: dict[str, StreamState] = {}

    def knows(self, stream_id: str) -> bool:
        return stream_id in self.streams

    def restore(self, stream_id: str, ema: float | None, pts_ms: int | None, alert: bool, frames: int) -> None:
        """Continue from the state another worker (or this one before a restart) left in Redis."""
        self.streams[stream_id] = StreamState(ema=ema, last_pts_ms=pts_ms, alert=alert, frames=frames)

    def forget(self, stream_id: str) -> None:
        self.streams.pop(stream_id, None)

    def update(self, stream_id: str, pts_ms: int, score: float) -> FrameScore | None:
        """Fold one frame in; None when it is a replay of a frame already scored (at-least-once)."""
        p = self.params
        state = self.streams.setdefault(stream_id, StreamState())
        if state.last_pts_ms is not None and pts_ms <= state.last_pts_ms:
            if state.last_pts_ms - pts_ms < p.restart_gap_ms:
                return None
            state = self.streams[stream_id] = StreamState(alert=state.alert, frames=state.frames)
        if state.ema is None or state.last_pts_ms is None:
            ema = score
        else:
            dt_s = (pts_ms - state.last_pts_ms) / 1000.0
            weight = 1.0 - math.pow(0.5, dt_s / p.ema_half_life_s)
            ema = state.ema + weight * (score - state.ema)
        state.ema, state.last_pts_ms = ema, pts_ms
        state.frames += 1
        state.recent.append((pts_ms, score))
        horizon = pts_ms - p.recent_window_s * 1000.0
        while state.recent and state.recent[0][0] < horizon:
            state.recent.popleft()
        event = None
        if not state.alert and ema >= p.alert_on:
            state.alert, event = True, ALERT_RAISE
        elif state.alert and ema < p.alert_off:
            state.alert, event = False, ALERT_CLEAR
        return FrameScore(stream_id, pts_ms, score, ema, max(s for _, s in state.recent), state.alert, event)
