from __future__ import annotations

import threading
import time

import pytest

from framewatch.worker.batcher import DynamicBatcher
from framewatch.worker.contracts import ALERT_CLEAR, ALERT_RAISE
from framewatch.worker.scoring import (
    REASON_NEW_BROADCAST,
    SKIP_REPLAY,
    FrameScore,
    MessageTime,
    ScoringParams,
    StreamScorer,
    StreamState,
)


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


def timed(offset: int, start_ms: int, partition: int = 0, duration_ms: int = 2000, ts: int = -1,
          broadcast: str | None = None) -> MessageTime:
    return MessageTime(partition, offset, ts, start_ms=start_ms, duration_ms=duration_ms, broadcast=broadcast)


def frame(scorer: StreamScorer, msg: MessageTime, index: int, offset_ms: int, score: float, stream: str = "s") -> FrameScore:
    out = scorer.update(stream, msg, index, offset_ms, score)
    assert isinstance(out, FrameScore), out
    return out


def test_ema_half_life_in_stream_time() -> None:
    scorer = StreamScorer(ScoringParams(ema_half_life_s=10, alert_on=0.9, alert_off=0.1))
    first = frame(scorer, timed(0, 0), 0, 0, 0.0)
    assert first.ema == 0.0
    later = frame(scorer, timed(1, 10_000), 0, 0, 1.0)  # one half-life later: halfway to the new score
    assert later.ema == pytest.approx(0.5)


def test_max_recent_window_and_replays_by_position() -> None:
    scorer = StreamScorer(ScoringParams(recent_window_s=5))
    frame(scorer, timed(0, 0), 0, 0, 0.9)
    frame(scorer, timed(0, 0), 1, 1000, 0.2)
    assert scorer.update("s", timed(0, 0), 1, 1000, 0.3) == SKIP_REPLAY  # the same message and frame again
    assert scorer.update("s", timed(0, 0), 0, 0, 0.3) == SKIP_REPLAY
    out = frame(scorer, timed(1, 5500), 0, 0, 0.1)
    assert out.max_recent == pytest.approx(0.2)  # the 0.9 at t=0 left the 5-s window
    assert scorer.streams["s"].frames == 3


def test_alerts_have_hysteresis() -> None:
    scorer = StreamScorer(ScoringParams(ema_half_life_s=0.001, alert_on=0.7, alert_off=0.5))
    events = [frame(scorer, timed(t, t * 1000, duration_ms=1000), 0, 0, score) for t, score in enumerate([0.2, 0.8, 0.6, 0.9, 0.4, 0.6, 0.8])]
    assert [e.alert_event for e in events] == [None, ALERT_RAISE, None, None, ALERT_CLEAR, None, ALERT_RAISE]


def test_a_restarted_broadcast_is_scored_and_closes_the_old_alert() -> None:
    scorer = StreamScorer(ScoringParams(ema_half_life_s=1, alert_on=0.7, alert_off=0.5))
    for offset in range(3):  # the first broadcast: violent, alert raised
        frame(scorer, timed(offset, offset * 2000), 0, 0, 0.95)
    assert scorer.streams["s"].alert
    restarted = frame(scorer, timed(3, 0), 0, 0, 0.1)  # stream time back to 0 in a new message
    assert restarted.pts_ms == 0 and restarted.ema == pytest.approx(0.1)  # a fresh EMA, not a replay
    assert [(e.event, e.reason, e.broadcast) for e in restarted.events] == [(ALERT_CLEAR, REASON_NEW_BROADCAST, "1")]
    assert restarted.broadcast == "2" and not restarted.alert and restarted.max_recent == pytest.approx(0.1)
    second = frame(scorer, timed(3, 0), 1, 1000, 0.1)
    assert second.events == () and second.broadcast == "2"


def test_a_restarted_violent_broadcast_raises_again() -> None:
    scorer = StreamScorer(ScoringParams(ema_half_life_s=1, alert_on=0.7, alert_off=0.5))
    frame(scorer, timed(0, 60_000), 0, 0, 0.9)
    out = frame(scorer, timed(1, 0), 0, 0, 0.9)
    assert [e.event for e in out.events] == [ALERT_CLEAR, ALERT_RAISE] and out.alert


def test_broadcast_id_header_decides_restarts() -> None:
    scorer = StreamScorer(ScoringParams())
    frame(scorer, timed(0, 10_000, broadcast="a"), 0, 0, 0.5)
    assert scorer.streams["s"].broadcast == "a"
    late = frame(scorer, timed(1, 4_000, broadcast="a"), 0, 0, 0.5)  # back in time, same broadcast: late, not a restart
    assert late.late and late.broadcast == "a" and late.pts_ms == 4_000
    new = frame(scorer, timed(2, 20_000, broadcast="b"), 0, 0, 0.5)  # forward in time, another broadcast: a restart
    assert new.broadcast == "b" and not new.late


def test_untimed_messages_keep_increasing() -> None:
    scorer = StreamScorer(ScoringParams())
    pts = []
    for offset in range(3):  # independently encoded segments produced in one burst: same record time, no start
        msg = MessageTime(0, offset, 1_700_000_000_000, start_ms=None, hint_ms=1_700_000_000_000, duration_ms=2000)
        pts += [frame(scorer, msg, i, i * 1000, 0.5).pts_ms for i in range(2)]
    base = 1_700_000_000_000
    assert pts == [base, base + 1000, base + 2000, base + 3000, base + 4000, base + 5000]


def test_stills_without_times_are_all_scored_in_order() -> None:
    scorer = StreamScorer(ScoringParams())
    pts = [frame(scorer, MessageTime(0, o, 5000, hint_ms=5000), 0, 0, 0.5).pts_ms for o in range(4)]
    assert pts == sorted(set(pts)) and len(pts) == 4


def test_frames_over_two_partitions_are_all_scored() -> None:
    """A stream-id header over alternating keys: positions are kept per partition."""
    scorer = StreamScorer(ScoringParams())
    written = 0
    for offset in range(5):
        for partition in (0, 1):
            msg = timed(offset, (offset * 2 + partition) * 2000 if partition == 0 else (offset * 2 + partition) * 2000 - 4000,
                        partition=partition)
            for i in range(2):
                written += isinstance(scorer.update("s", msg, i, i * 1000, 0.5), FrameScore)
    assert written == 20


def test_a_recreated_topic_is_not_a_replay() -> None:
    scorer = StreamScorer(ScoringParams())
    frame(scorer, timed(500, 0, ts=1_000), 0, 0, 0.5)
    assert scorer.update("s", timed(500, 0, ts=1_000), 0, 0, 0.5) == SKIP_REPLAY
    assert isinstance(scorer.update("s", timed(3, 2000, ts=9_000), 0, 0, 0.5), FrameScore)  # offsets restarted, newer record
    again = scorer.update("s", MessageTime(0, 500, 12_000, start_ms=6000, duration_ms=2000), 0, 0, 0.5)
    assert isinstance(again, FrameScore) and again.pts_ms == 6000 and not again.late  # the old message's times are not reused


def test_scoring_is_kept_only_on_commit() -> None:
    scorer = StreamScorer(ScoringParams())
    frame(scorer, timed(0, 0), 0, 0, 0.5)
    attempt = scorer.begin()
    assert isinstance(attempt.update("s", timed(1, 2000), 0, 0, 0.9), FrameScore)
    assert isinstance(attempt.update("new", timed(2, 0), 0, 0, 0.9), FrameScore)
    assert scorer.streams["s"].frames == 1 and not scorer.knows("new")  # the write failed: nothing kept
    retry = scorer.begin()
    assert isinstance(retry.update("s", timed(1, 2000), 0, 0, 0.9), FrameScore)  # so the retry scores it again
    retry.commit()
    assert scorer.streams["s"].frames == 2


def test_state_restored_from_redis_continues_the_ema_and_skips_written_frames() -> None:
    scorer = StreamScorer(ScoringParams(ema_half_life_s=10))
    scorer.restore("s", StreamState(ema=1.0, last_pts_ms=5000, alert=True, frames=12, positions={0: (7, 1, -1)},
                                    last_partition=0, message=(0, 7, -1), message_base_ms=4000))
    assert scorer.update("s", timed(7, 4000), 1, 1000, 0.0) == SKIP_REPLAY
    out = frame(scorer, timed(8, 15_000), 0, 0, 0.0)
    assert out.ema == pytest.approx(0.5) and out.alert


def test_idle_streams_are_forgotten() -> None:
    now = [0.0]
    scorer = StreamScorer(ScoringParams(), clock=lambda: now[0])
    frame(scorer, timed(0, 0), 0, 0, 0.5, stream="quiet")
    now[0] = 50.0
    frame(scorer, timed(1, 0), 0, 0, 0.5, stream="live")
    assert scorer.forget_idle(30.0) == ["quiet"] and list(scorer.streams) == ["live"]
