from __future__ import annotations

import pytest

from framewatch.worker.offsets import OffsetTracker


def test_commit_never_passes_unfinished_work() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.add("t", 0, offset)
    tracker.mark_done("t", 0, 12)
    tracker.mark_done("t", 0, 13)
    assert tracker.committable() == {}  # 10 and 11 are still in flight
    tracker.mark_done("t", 0, 10)
    assert tracker.committable() == {("t", 0): 11}
    tracker.mark_done("t", 0, 11)
    assert tracker.committable() == {("t", 0): 14}


def test_a_failed_commit_is_retried_not_forgotten() -> None:
    tracker = OffsetTracker()
    tracker.add("t", 1, 5)
    tracker.mark_done("t", 1, 5)
    ready = tracker.committable()
    assert ready == {("t", 1): 6}
    # The commit call failed: nothing acknowledged, the same offset is offered again.
    assert tracker.committable() == ready
    tracker.acknowledge(ready)
    assert tracker.committable() == {} and tracker.in_flight == 0


def test_partitions_are_independent_and_forgettable() -> None:
    tracker = OffsetTracker()
    tracker.add("t", 0, 1)
    tracker.add("t", 1, 7)
    tracker.mark_done("t", 1, 7)
    assert tracker.committable() == {("t", 1): 8}
    tracker.forget("t", 0)
    tracker.mark_done("t", 0, 1)  # a late completion of a revoked partition is ignored
    assert ("t", 0) not in tracker.committable()


def test_out_of_order_poll_is_a_bug() -> None:
    tracker = OffsetTracker()
    tracker.add("t", 0, 3)
    with pytest.raises(ValueError):
        tracker.add("t", 0, 2)
