"""Redis semantics the moderation tools rely on, against a real Valkey (and a three-master Valkey
cluster): alerts on a cluster, alerts that close when a stream goes quiet, a ranking that prunes
itself, a bad key that neither duplicates nor stalls, a follower that survives quiet periods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from framewatch.devservices import DevServices, stop_pid
from framewatch.worker.redis_io import Scores, typed
from tests.integration.harness import (
    Sandbox,
    WorkerProcess,
    clip,
    committed_offsets,
    end_offsets,
    history_pts,
    producer,
    read_dlq,
    send_segment,
    start_cluster,
    wait_for,
)

pytestmark = pytest.mark.integration

ALWAYS_ALERT = {"FRAMEWATCH_SCORING__ALERT_ON": "0.0002", "FRAMEWATCH_SCORING__ALERT_OFF": "0.0001"}


def events(scores: Scores) -> list[dict[str, Any]]:
    return scores.alerts(1000)


def test_alerts_fire_and_close_on_a_three_master_cluster(services: DevServices, exported_model: Path, tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path / "cluster")
    try:
        from redis.cluster import RedisCluster

        sandbox = Sandbox(services.kafka_bootstrap, f"redis://127.0.0.1:{nodes[0].port}/0")
        sandbox.create_topics()
        streams = [f"cl-{i}" for i in range(6)]
        prod = producer(sandbox)
        for segment in range(2):
            for i, stream in enumerate(streams):
                send_segment(prod, sandbox, stream, clip(i, violent=i % 2 == 0), segment * 2000)
        prod.close()
        worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_REDIS__CLUSTER="true",
                               FRAMEWATCH_SCORING__STALE_AFTER_S="5", **ALWAYS_ALERT)
        client = RedisCluster(host="127.0.0.1", port=nodes[0].port)
        scores = Scores(client, sandbox.prefix, stale_after_s=5)
        try:
            wait_for(lambda: all(len(scores.history(s)) == 4 for s in streams), 120, "every frame of every stream scored")
            raised = {e["stream"] for e in events(scores) if e["event"] == "raise"}
            assert raised == set(streams), "every stream raised an alert on the cluster"
            # The streams stop while alerting: each alert is closed as stale and the ranking empties
            # itself, with no reader calling top().
            wait_for(lambda: {e["stream"] for e in events(scores) if e["event"] == "clear" and e["reason"] == "stale"} == set(streams),
                     60, "stale clears for every stream")
            wait_for(lambda: client.zcard(sandbox.keys.active) == 0, 30, "the ranking pruned by the workers")
            assert worker.process.poll() is None, "the worker keeps running"
            assert scores.top(10) == []
            assert len(scores.top(10, include_stale=True)) == 0  # left the ranking; the hashes stay until their TTL
            assert all(scores.get(s)["alert"] == 0 for s in streams)  # type: ignore[index]
        finally:
            code = worker.stop()
        assert code == 0, worker.logs()[-3000:]
        logs = worker.logs()
        assert "RedisClusterException" not in logs and "inference thread died" not in logs
        clears = [e for e in events(scores) if e["event"] == "clear"]
        assert len(clears) == len(streams), "each alert closed exactly once"
    finally:
        for node in nodes:
            stop_pid(node.pid)


def test_a_bad_key_is_dead_lettered_without_duplicating_the_good_streams(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    client.set(sandbox.keys.history("bad"), "not a stream")  # written by something else
    prod = producer(sandbox)
    for segment in range(3):
        send_segment(prod, sandbox, "good", clip(1, violent=False), segment * 2000)
        send_segment(prod, sandbox, "bad", clip(2, violent=False), segment * 2000)
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_BATCH__MAX_DELAY_MS="300")
    try:
        wait_for(lambda: len(history_pts(client, sandbox, "good")) >= 6, 90, "the good stream scored")
        dead = read_dlq(sandbox, expected=3, timeout_s=60)
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 60, "everything committed")
        time.sleep(1.0)
        assert worker.process.poll() is None, "the worker keeps running"
    finally:
        code = worker.stop()
    assert code == 0
    assert history_pts(client, sandbox, "good") == [0, 1000, 2000, 3000, 4000, 5000], "no duplicate and no loss"
    assert client.hget(sandbox.keys.stream("good"), "frames") == b"6"
    assert [dict(r.headers)["error-type"] for r in dead] == [b"redis-rejected"] * 3
    assert all(r.key == b"bad" for r in dead)
    raises = [e for e in Scores(client, sandbox.prefix).alerts(100) if e["stream"] == "good" and e["event"] == "raise"]
    assert len(raises) <= 1


def test_alerts_follow_survives_quiet_periods_and_misses_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    scores = Scores(client, sandbox.prefix)

    def add(stream: str) -> None:
        client.xadd(sandbox.keys.alerts, {"stream": stream, "event": "raise", "ema": "0.9", "pts_ms": "1", "at_ms": "1", "model": "2024"})

    add("007")
    # The library: an event written between listing and following is not lost.
    listed = scores.alerts(10)
    add("between")
    follower = scores.follow_alerts(after=listed[-1]["id"], block_ms=200)
    assert next(follower)["stream"] == "between"
    env = {**sandbox.env(Path("/nonexistent")), "FRAMEWATCH_REDIS__SOCKET_TIMEOUT_S": "1"}
    env.pop("FRAMEWATCH_MODEL")
    out = open(tmp_path / "follow.out", "wb")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "framewatch.cli", "scores", "alerts", "--follow", "--last", "5"], env=env,
                               stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for(lambda: b'"between"' in (tmp_path / "follow.out").read_bytes(), 30, "the listing")
        time.sleep(4.0)  # quiet for four socket timeouts
        assert process.poll() is None, (tmp_path / "follow.out").read_text()
        add("after-quiet-1")
        add("after-quiet-2")
        wait_for(lambda: b"after-quiet-2" in (tmp_path / "follow.out").read_bytes(), 15, "new events followed")
    finally:
        process.terminate()
        process.wait(timeout=10)
        out.close()
    lines = [json.loads(line) for line in (tmp_path / "follow.out").read_text().splitlines() if line.startswith("{")]
    assert [e["stream"] for e in lines] == ["007", "between", "after-quiet-1", "after-quiet-2"]
    assert lines[0]["stream"] == "007" and lines[0]["model"] == "2024"  # ids stay strings


def test_ids_and_values_keep_their_types() -> None:
    assert typed("stream", "007") == "007" and typed("model", "2024") == "2024" and typed("broadcast", "1_000") == "1_000"
    assert typed("ema", "nan") == "nan" and typed("ema", "0.5") == 0.5 and typed("frames", "12") == 12
    json.dumps({"ema": typed("ema", "inf")}, allow_nan=False)


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text
    except OSError:  # not listening yet
        return ""


def lag_partitions(text: str) -> set[str]:
    return {line.split('partition="')[1].split('"')[0] for line in text.splitlines() if line.startswith("framewatch_consumer_lag{")}


@pytest.mark.slow  # ~26 s: partitions moved between two workers; `make test-slow`
def test_lag_series_leave_with_their_partitions(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    from framewatch.devservices import free_port

    port = free_port()
    prod = producer(sandbox)
    for i in range(sandbox.partitions * 2):
        send_segment(prod, sandbox, f"lag{i}", clip(i, violent=False), 0)
    prod.close()
    first = WorkerProcess(sandbox, exported_model, tmp_path / "a.log", FRAMEWATCH_METRICS_PORT=str(port), FRAMEWATCH_METRICS_HOST="127.0.0.1")
    second = None
    try:
        wait_for(lambda: len(lag_partitions(metrics_text(port))) == sandbox.partitions, 60, "lag of every partition")
        second = WorkerProcess(sandbox, exported_model, tmp_path / "b.log")
        wait_for(lambda: '"partitions assigned"' in second.logs(), 60, "the second worker's assignment")  # type: ignore[union-attr]
        time.sleep(6.0)  # the lag is refreshed every 5 s
        owned = wait_for(lambda: lag_partitions(metrics_text(port)), 10, "lag series")
        assert 0 < len(owned) < sandbox.partitions, f"the first worker still reports partitions it gave away: {owned}"
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert os.path.exists(tmp_path / "a.log")
