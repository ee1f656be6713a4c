from __future__ import annotations

import threading
import time

import pytest

from worker.batcher import DynamicBatcher
from worker.contracts import ALERT_CLEAR, ALERT_RAISE
from worker.scoring import ScoringParams, StreamScorer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_batch_leaves_when_full() -> None:
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch=4, max_delay_ms=10_000)
    for i in range(6):
        batcher.put(i)
    assert batcher.next_batch(timeout=1) == [0, 1, 2, 3]
    assert len(batcher) == 2


def test_batch_leaves_max_delay_after_its_first_item() -> None:
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch=100, max_delay_ms=80)
    started = time.monotonic()
    batcher.put(1)

    def late() -> None:
        time.sleep(0.03)
        batcher.put(2)

    threading.Thread(target=late).start()
    batch = batcher.next_batch(timeout=5)
    waited = time.monotonic() - started
    assert batch == [1, 2]
    assert 0.07 <= waited < 1.0  # flushed by the delay, counted from the first item, not the second


def test_empty_batcher_times_out_and_close_flushes() -> None:
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch=8, max_delay_ms=60_000)
    assert batcher.next_batch(timeout=0.05) is None
    batcher.put(7)
    batcher.close()
    assert batcher.next_batch(timeout=5) == [7]  # closing hands out what is queued at once
    assert batcher.next_batch(timeout=5) is None


def test_drop_removes_a_revoked_partitions_items() -> None:
    batcher: DynamicBatcher[tuple[int, int]] = DynamicBatcher(max_batch=8, max_delay_ms=0)
    for item in ((0, 1), (1, 2), (0, 3)):
        batcher.put(item)
    assert batcher.drop(lambda item: item[0] == 0) == 2
    assert batcher.next_batch(timeout=1) == [(1, 2)]


def test_ema_half_life_in_stream_time() -> None:
    scorer = StreamScorer(ScoringParams(ema_half_life_s=10, alert_on=0.9, alert_off=0.1))
    first = scorer.update("s", 0, 0.0)
    assert first is not None and first.ema == 0.0
    later = scorer.update("s", 10_000, 1.0)  # one half-life later: halfway to the new score
    assert later is not None and later.ema == pytest.approx(0.5)


def test_max_recent_window_and_replays() -> None:
    scorer = StreamScorer(ScoringParams(recent_window_s=5))
    scorer.update("s", 0, 0.9)
    scorer.update("s", 1000, 0.2)
    assert scorer.update("s", 1000, 0.3) is None  # a replay of a frame already scored
    out = scorer.update("s", 7000, 0.1)
    assert out is not None and out.max_recent == pytest.approx(0.1)  # 0.9 and 0.2 left the 5 s window


def test_alerts_have_hysteresis() -> None:
    scorer = StreamScorer(ScoringParams(ema_half_life_s=0.001, alert_on=0.7, alert_off=0.5))
    events = [scorer.update("s", t * 1000, score) for t, score in enumerate([0.2, 0.8, 0.6, 0.9, 0.4, 0.6, 0.8])]
    assert [e.alert_event for e in events if e is not None] == [None, ALERT_RAISE, None, None, ALERT_CLEAR, None, ALERT_RAISE]


def test_a_new_broadcast_restarts_the_stream_state() -> None:
    scorer = StreamScorer(ScoringParams(restart_gap_ms=60_000))
    scorer.update("s", 3_600_000, 0.9)
    restarted = scorer.update("s", 0, 0.1)  # far before the last frame: not a replay
    assert restarted is not None and restarted.ema == pytest.approx(0.1)


def test_state_restored_from_redis_continues_the_ema() -> None:
    scorer = StreamScorer(ScoringParams(ema_half_life_s=10))
    scorer.restore("s", ema=1.0, pts_ms=5000, alert=True, frames=12)
    assert scorer.update("s", 4000, 0.0) is None
    out = scorer.update("s", 15_000, 0.0)
    assert out is not None and out.ema == pytest.approx(0.5) and out.alert
