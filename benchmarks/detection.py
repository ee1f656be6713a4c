"""The detection delay a sampling policy implies, through the worker's own sampler and scorer.

A stream is calm (every sampled frame scores ``calm``) until an event starts at a moment drawn
uniformly within a key-frame interval, and violent (``violent``) from then on: the delay is the
stream time from the event's start to the frame whose EMA raises the alert. The classifier is
ideal here on purpose: what is measured is what the policy and the EMA add, not the model. The
pipeline latency (a segment's production to its scores in Redis, ``p99_latency_ms``) comes on top
and is the same for every policy.

The EMA's half-life is in stream time, so sampling density changes the delay only by where the
first violent frame falls: with the default 10-s half-life the alert needs ~18.5 s of violence
whatever the policy, and the grid (a frame a second) sees the event at most 1 s after it starts,
key frames (one per 2-s segment) at most 2 s after.
"""

from __future__ import annotations

from typing import Any

from framewatch.config import DecodeSettings, ScoringSettings
from framewatch.worker.sampling import Policy, Sampler
from framewatch.worker.scoring import FrameScore, MessageTime, ScoringParams, StreamScorer


def sampled_times(start_ms: int, segment_ms: int, keyframe_ms: int, keyframes: bool, sample_fps: float) -> list[int]:
    step = keyframe_ms if keyframes else 1000.0 / sample_fps
    times, t = [], float(start_ms)
    while t < start_ms + segment_ms - 0.5:
        times.append(round(t))
        t += step
    return times


def delay_once(policy: Policy, event_ms: int, segment_ms: int, keyframe_ms: int, decode: DecodeSettings, scoring: ScoringSettings,
               calm: float, violent: float, horizon_ms: int) -> float | None:
    scorer = StreamScorer(ScoringParams(scoring.ema_half_life_s, scoring.recent_window_s, scoring.alert_on, scoring.alert_off))
    sampler = Sampler(policy, decode.watch_on, decode.watch_off)
    for index in range(horizon_ms // segment_ms):
        start = index * segment_ms
        state = scorer.streams.get("s")
        keyframes = sampler.keyframes_only("s", state.ema if state is not None else None)
        for frame_index, pts in enumerate(sampled_times(start, segment_ms, keyframe_ms, keyframes, decode.sample_fps)):
            score = violent if pts >= event_ms else calm
            result = scorer.update("s", MessageTime(0, index, start_ms=start, duration_ms=segment_ms), frame_index, pts - start, score)
            if isinstance(result, FrameScore) and result.alert:
                return (pts - event_ms) / 1000.0
    return None


def detection_delay(policy: Policy, segment_ms: int = 2000, keyframe_ms: int = 2000, decode: DecodeSettings | None = None,
                    scoring: ScoringSettings | None = None, calm: float = 0.05, violent: float = 0.95, draws: int = 20,
                    calm_before_ms: int = 60_000) -> dict[str, Any]:
    """Mean, smallest and largest delay (s) over ``draws`` event starts spread over one key-frame interval."""
    decode = decode or DecodeSettings(policy=policy)
    scoring = scoring or ScoringSettings()
    delays = [delay_once(policy, calm_before_ms + round(i * keyframe_ms / draws), segment_ms, keyframe_ms, decode, scoring, calm, violent,
                         calm_before_ms + 120_000) for i in range(draws)]
    found = [d for d in delays if d is not None]
    return {"mean_s": round(sum(found) / len(found), 2) if found else None, "min_s": min(found, default=None),
            "max_s": max(found, default=None), "missed": len(delays) - len(found), "calm_score": calm, "violent_score": violent}
