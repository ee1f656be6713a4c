"""Reading stream state back, health, and the configuration checks that guard delivery."""

from __future__ import annotations

import pytest

from framewatch.config import ConfigError, load_settings
from framewatch.worker.metrics import Health
from framewatch.worker.redis_io import parse_state, state_fields
from framewatch.worker.scoring import MessageTime, ScoringParams, StreamScorer


def test_state_round_trips_through_hash_fields() -> None:
    scorer = StreamScorer(ScoringParams())
    scorer.update("s", MessageTime(2, 40, 1_000, start_ms=6000, duration_ms=2000, broadcast="b7"), 1, 1000, 0.8)
    state = scorer.streams["s"]
    fields = {**state_fields(state), "ema": "0.8", "pts_ms": "7000", "max_recent": "0.8"}
    back, bad = parse_state(fields)
    assert bad == []
    assert back.positions == {2: (40, 1, 1_000)} and back.broadcast == "b7" and back.broadcast_from_header
    assert back.message == (2, 40, 1_000) and back.message_base_ms == 6000 and back.end_ms == 8000 and back.last_partition == 2


def test_broken_fields_are_skipped_and_named() -> None:
    state, bad = parse_state({"ema": "", "pts_ms": "x", "frames": "12", "positions": "{not json", "alert": "1"})
    assert state.ema is None and state.frames == 12 and state.alert and state.positions == {}
    assert set(bad) == {"pts_ms", "positions"}


def test_a_hash_from_before_positions_still_guards_its_last_message() -> None:
    state, _ = parse_state({"ema": "0.5", "pts_ms": "3000", "partition": "1", "offset": "9", "frames": "4"})
    scorer = StreamScorer(ScoringParams())
    scorer.restore("s", state)
    assert scorer.update("s", MessageTime(1, 9, start_ms=2000), 1, 1000, 0.5) == "replay"
    assert scorer.update("s", MessageTime(1, 10, start_ms=4000), 0, 0, 0.5) != "replay"


def test_health_reports_a_stalled_thread_and_a_fatal_error() -> None:
    now = [0.0]
    health = Health(stall_seconds=60, clock=lambda: now[0])
    health.beat("inference")
    now[0] = 30.0
    health.tick()
    assert health.alive()
    now[0] = 61.0
    health.tick()
    assert health.problem() == "inference thread stalled for 61 s"
    health.beat("inference")
    health.fatal = "inference thread died: RuntimeError: boom"
    assert not health.alive() and health.problem() == health.fatal


@pytest.mark.parametrize("override", [
    {"kafka": {"dlq_topic": "dead letters"}},
    {"kafka": {"dlq_topic": ".."}},
    {"kafka": {"topic": "same", "dlq_topic": "same"}},
    {"scoring": {"stale_after_s": 90_000}},
    {"decode": {"max_message_bytes": 64 * 2**20}},
])
def test_delivery_settings_are_checked_at_start(override: dict[str, dict[str, object]]) -> None:
    with pytest.raises(ConfigError):
        load_settings(**override)
