"""Which frames of a segment are decoded and scored: the sampling policy (``decode.policy``).

* ``grid``: the first frame of every 1/``sample_fps`` seconds of stream time. Decoding a frame
  in the middle of a GOP means decoding every frame before it: at 1 frame/s of 720p30 with one
  keyframe per 2-s segment, the decoder decodes ~16 frames per frame scored.
* ``keyframes``: key frames only (FFmpeg skips the others without decoding them: ``skip_frame``
  NONKEY). Live platforms send one every 2 s, so a stream is seen every 2 s instead of every
  second, at a fraction of the decode cost.
* ``adaptive``: keyframes while a stream is calm, the grid while its EMA is at or above
  ``watch_on`` and until it falls below ``watch_off`` (hysteresis): decode is spent where the
  risk is. The decision is taken when a segment is handed to the decoders, from the stream's
  EMA at that moment (segments already in flight were decided before). While the scorer does not
  hold a stream's state (a new stream, or one re-read from Redis after a rebalance or an error),
  the last decision stands; a new stream starts calm. The watched set is bounded (least recently
  seen forgotten first).

The detection delay each policy implies is measured by ``framewatch bench pipeline``
(docs/performance.md): it is the time from the first violent frame to the alert.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

Policy = Literal["grid", "keyframes", "adaptive"]
POLICIES: tuple[Policy, ...] = ("grid", "keyframes", "adaptive")


class Sampler:
    """Per message: decode key frames only, or the grid. Keeps the set of watched streams."""

    def __init__(self, policy: Policy, watch_on: float, watch_off: float, max_watched: int = 100_000) -> None:
        if not 0 <= watch_off <= watch_on <= 1:
            raise ValueError(f"watch_off {watch_off} must not exceed watch_on {watch_on}, both in 0..1")
        self.policy = policy
        self.watch_on = watch_on
        self.watch_off = watch_off
        self.max_watched = max_watched
        self.watched: OrderedDict[str, None] = OrderedDict()  # most recently seen last

    def keyframes_only(self, stream_id: str, ema: float | None) -> bool:
        if self.policy == "grid":
            return False
        if self.policy == "keyframes":
            return True
        watching = stream_id in self.watched
        if ema is not None:  # None: the scorer does not hold the stream right now; keep the last decision
            if not watching and ema >= self.watch_on:
                watching = True
            elif watching and ema < self.watch_off:
                watching = False
        if watching:
            self.watched[stream_id] = None
            self.watched.move_to_end(stream_id)
            while len(self.watched) > self.max_watched:  # a watched stream that ended is forgotten eventually
                self.watched.popitem(last=False)
        else:
            self.watched.pop(stream_id, None)
        return not watching
