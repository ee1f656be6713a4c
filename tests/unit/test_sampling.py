"""The sampling policies on real encoded segments: which frames each one decodes and scores, with
their stream time (issue 15). The adaptive policy is driven by the worker's own scorer."""

from __future__ import annotations

import numpy as np
import pytest

from framewatch.config import DecodeSettings, ScoringSettings
from framewatch.worker.decode import decode_request, decode_segment
from framewatch.worker.media import encode_segment
from framewatch.worker.sampling import Sampler
from framewatch.worker.scoring import MessageTime, ScoringParams, StreamScorer

MODEL = type("Model", (), {"input_size": (32, 32), "interpolation": "bilinear"})()


def _segment(seconds: int, fps: int = 10, gop: int | None = None, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    frames = [np.full((48, 64, 3), rng.integers(0, 255), dtype=np.uint8) for _ in range(seconds * fps)]
    return encode_segment(frames, fps, "mpegts", gop=gop)[0]


def _decode(payload: bytes, settings: DecodeSettings, start_ms: int, duration_ms: int, keyframes: bool | None = None) -> tuple[list[int], int]:
    result = decode_segment(decode_request(settings, MODEL, payload, "video/mp2t", start_ms, duration_ms, keyframes_only=keyframes))  # type: ignore[arg-type]
    return [f.pts_ms for f in result.frames], result.decoded


def test_keyframes_takes_every_key_frame_and_decodes_nothing_else() -> None:
    payload = _segment(4, gop=10)  # a key frame every second
    pts, decoded = _decode(payload, DecodeSettings(policy="keyframes"), 6000, 4000)
    assert pts == [6000, 7000, 8000, 9000] and decoded == 4
    pts, decoded = _decode(payload, DecodeSettings(policy="grid", sample_fps=2), 6000, 4000)
    assert pts == [6000 + 500 * i for i in range(8)] and decoded >= 36  # the grid decodes (almost) every frame
    assert DecodeSettings(keyframes_only=True).policy == "keyframes"  # the older switch still works
    with pytest.raises(ValueError, match="keep one of them"):
        DecodeSettings(keyframes_only=True, policy="grid")


def test_keyframes_are_capped_by_sample_fps_and_know_where_the_video_ends() -> None:
    payload = _segment(2, gop=1)  # all intra: 20 key frames in 2 s
    pts, _ = _decode(payload, DecodeSettings(policy="keyframes"), 0, 2000)
    assert pts == [0, 1000]  # one a second, like the grid, not 20
    one_key = _segment(2, gop=20)
    result = decode_segment(decode_request(DecodeSettings(policy="keyframes"), MODEL, one_key, "video/mp2t", None, None))  # type: ignore[arg-type]
    assert [f.pts_ms for f in result.frames] == [result.frames[0].pts_ms] and result.duration_ms == 2000  # the packets say where it ends
    cut = decode_segment(decode_request(DecodeSettings(policy="keyframes"), MODEL, one_key, "video/mp2t", 0, 4000))  # type: ignore[arg-type]
    assert cut.truncated is not None and "2000 ms before the declared 4000 ms" in cut.truncated and cut.duration_ms == 2000


def test_the_sampler_s_hysteresis() -> None:
    sampler = Sampler("adaptive", watch_on=0.35, watch_off=0.25)
    assert sampler.keyframes_only("s", None) is True  # unknown: calm
    assert [sampler.keyframes_only("s", ema) for ema in (0.2, 0.36, 0.3, 0.26, 0.24, 0.3)] == [True, False, False, False, True, True]
    # the scorer re-reading a watched stream (None) does not reset its decision
    assert [sampler.keyframes_only("t", ema) for ema in (0.5, None, 0.3, 0.2)] == [False, False, False, True]
    small = Sampler("adaptive", 0.35, 0.25, max_watched=2)
    for stream in ("a", "b", "c"):
        small.keyframes_only(stream, 0.9)
    assert list(small.watched) == ["b", "c"]
    assert Sampler("grid", 0.35, 0.25).keyframes_only("s", 0.0) is False and Sampler("keyframes", 0.35, 0.25).keyframes_only("s", 1.0) is True
    with pytest.raises(ValueError, match="watch_off"):
        Sampler("adaptive", 0.2, 0.3)


def test_adaptive_switches_to_the_grid_when_a_stream_heats_up_and_back_when_it_calms() -> None:
    """2-s segments with one key frame each; scores calm, then violent for 20 s, then calm."""
    settings = DecodeSettings(policy="adaptive")
    scoring = ScoringSettings()
    scorer = StreamScorer(ScoringParams(scoring.ema_half_life_s, scoring.recent_window_s, scoring.alert_on, scoring.alert_off))
    sampler = Sampler("adaptive", settings.watch_on, settings.watch_off)
    payloads = [_segment(2, gop=20, seed=i) for i in range(3)]
    modes, all_pts = [], []
    for index in range(40):
        start = index * 2000
        state = scorer.streams.get("cam")
        keyframes = sampler.keyframes_only("cam", state.ema if state is not None else None)
        pts, _ = _decode(payloads[index % 3], settings, start, 2000, keyframes)
        assert pts == ([start] if keyframes else [start, start + 1000])
        for frame_index, frame_pts in enumerate(pts):
            score = 0.95 if 20_000 <= frame_pts < 40_000 else 0.05
            scorer.update("cam", MessageTime(0, index, start_ms=start, duration_ms=2000), frame_index, frame_pts - start, score)
        modes.append("K" if keyframes else "G")
        all_pts.extend(pts)
    pattern = "".join(modes)
    assert pattern.startswith("K" * 10) and "G" in pattern and pattern.endswith("K")
    first_grid, back = pattern.index("G"), pattern.index("K", pattern.index("G"))
    # Half-life 10 s, one key frame per 2 s: each violent frame moves the EMA 12.9 % of the way to
    # 0.95: 0.05 → 0.166 (segment 10) → 0.267 (11) → 0.355 (12) ≥ watch_on 0.35, so 13 is on the grid.
    assert first_grid == 13
    assert pattern[first_grid:back] == "G" * (back - first_grid) and back > 20  # watched until the EMA falls below watch_off
    assert all_pts == sorted(all_pts) and len(set(all_pts)) == len(all_pts)
