"""Evidence against the real broker, Redis and an exported model: stored before its alert, at a
moderator's size, with the stream's metadata; a worker killed between evidence and alert leaves
no alert without evidence and nothing that is never cleaned up; TTL and budget hold in Redis."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from framewatch.benchmarks.traffic import Sandbox
from framewatch.config import EvidenceSettings
from framewatch.worker import contracts as c
from framewatch.worker.evidence import (
    EvidenceError,
    EvidenceRecord,
    LocalEvidenceStore,
    RedisEvidenceStore,
    evidence_id,
)
from framewatch.worker.media import encode_segment
from framewatch.worker.redis_io import Scores
from tests.integration.harness import WorkerProcess, clip, producer, wait_for

META = {c.HEADER_STREAM_TITLE: "ranked finals, no mercy", c.HEADER_STREAM_CATEGORY: "fighting games"}


def _send(prod: Any, sandbox: Sandbox, stream: str, seed: int, segments: int, size: int = 256, metadata: dict[str, str] | None = None,
          start_ms: int = 0) -> None:
    frames = clip(seed, violent=True, frames=20 * segments, size=size)
    for i in range(segments):
        payload, content_type = encode_segment(frames[i * 20:(i + 1) * 20], 10.0, "mpegts")
        headers = c.segment_headers(content_type, segment_start_ms=start_ms + i * 2000, segment_duration_ms=2000, metadata=metadata)
        prod.send(sandbox.topic, key=stream.encode(), value=payload, headers=headers)
    prod.flush()


ALERT_ENV = {"FRAMEWATCH_SCORING__ALERT_ON": "0.0001", "FRAMEWATCH_SCORING__ALERT_OFF": "0.00005"}


def _store(sandbox: Sandbox) -> RedisEvidenceStore:
    return RedisEvidenceStore(redis.Redis.from_url(sandbox.redis_url), f"{sandbox.prefix}:evidence", 7 * 24 * 3600, 256 * 1024 * 1024)


def test_evidence_is_readable_before_its_alert_and_never_in_the_score_keys(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    store = _store(sandbox)
    seen: list[tuple[dict[str, str], list[bool]]] = []
    stop = threading.Event()

    def follow() -> None:
        # A moderation tool reading the alerts stream: the moment an alert is visible, its evidence must be.
        reader = redis.Redis.from_url(sandbox.redis_url)
        last = "0-0"
        while not stop.is_set():
            for _, entries in reader.xread({sandbox.keys.alerts: last}, block=200, count=10) or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    event = {k.decode(): v.decode() for k, v in fields.items()}
                    ids = [e for e in event.get(c.A_EVIDENCE, "").split(",") if e]
                    seen.append((event, [store.get(e) is not None for e in ids]))

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", **ALERT_ENV)
    try:
        _send(producer(sandbox), sandbox, "cam-ev", seed=11, segments=3, metadata=META)
        wait_for(lambda: Scores(client, sandbox.prefix).get("cam-ev") and Scores(client, sandbox.prefix).get("cam-ev")["frames"] == 6,  # type: ignore[index]
                 90, "the stream scored")
        wait_for(lambda: seen, 10, "the alert seen by the follower")
    finally:
        stop.set()
        worker.stop()
        follower.join(5)
    event, readable = seen[0]
    assert event[c.A_EVENT] == c.ALERT_RAISE and event[c.A_STREAM] == "cam-ev"
    assert readable and all(readable), f"evidence named by the alert was not readable when the alert appeared: {event}"
    assert float(event[c.A_THRESHOLD]) == pytest.approx(0.0001) and c.A_SCORE in event
    record, image = store.get(event[c.A_EVIDENCE].split(",")[0])  # type: ignore[misc]
    picture = Image.open(io.BytesIO(image))
    # The source is 256 px; the model saw 64 px. Evidence keeps the source's size (≤ 480 on the long side).
    assert picture.format == "JPEG" and picture.size == (256, 256)
    assert record.kind == "trigger" and record.stream == "cam-ev" and record.pts_ms == int(event[c.A_PTS_MS])
    assert record.metadata == META and record.text == "ranked finals, no mercy. fighting games"
    # The id is the frame's stream time in its message (partition:offset): a replay names the same.
    frame = next(f for _, f in client.xrange(sandbox.keys.history("cam-ev")) if int(f[b"pts_ms"]) == record.pts_ms)
    origin = f"{int(frame[b'partition'])}:{int(frame[b'offset'])}"
    assert record.id == evidence_id("cam-ev", event[c.A_BROADCAST], record.pts_ms, origin)
    # The stream hash keeps the metadata, so a restarted worker (or the next owner of the partition)
    # gives evidence its text even when the producer sent it only with the first segments.
    assert json.loads(client.hget(sandbox.keys.stream("cam-ev"), c.F_METADATA)) == META
    # No image bytes in the score hash, the history or the alerts: every field is short text.
    fields = list(client.hgetall(sandbox.keys.stream("cam-ev")).values())
    fields += [v for _, f in client.xrange(sandbox.keys.history("cam-ev")) for v in f.values()]
    fields += [v for _, f in client.xrange(sandbox.keys.alerts) for v in f.values()]
    assert fields and max(len(v) for v in fields) < 512 and not any(v.startswith(b"\xff\xd8") for v in fields)


def test_worker_killed_between_evidence_and_alert_leaves_no_orphans(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    store = _store(sandbox)
    _send(producer(sandbox), sandbox, "cam-kill", seed=12, segments=2, size=128)
    doomed = WorkerProcess(sandbox, exported_model, tmp_path / "doomed.log", FRAMEWATCH_FAULTS__EXIT_AFTER_EVIDENCE="1", **ALERT_ENV)
    code = doomed.process.wait(timeout=120)
    doomed.kill_group()
    assert code == 70, doomed.logs()[-2000:]
    assert client.xlen(sandbox.keys.alerts) == 0, "the alert was written although the worker died before it"
    orphans = [m.decode() for m in client.zrange(f"{sandbox.prefix}:evidence:{{ev}}:index", 0, -1)]
    assert orphans, "the evidence was written before the exit"
    for evidence in orphans:  # what nobody names yet is cleaned up by its TTL
        assert 0 < client.pttl(f"{sandbox.prefix}:evidence:{{ev}}:img:{evidence}") <= 7 * 24 * 3600 * 1000
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", **ALERT_ENV)
    try:
        wait_for(lambda: client.xlen(sandbox.keys.alerts) >= 1, 90, "the replayed message's alert")
    finally:
        worker.stop()
    alerts = Scores(client, sandbox.prefix).alerts()
    assert [a["event"] for a in alerts] == ["raise"], alerts
    named = set(str(alerts[0]["evidence"]).split(","))
    assert all(store.get(e) is not None for e in named)
    index = {m.decode() for m in client.zrange(f"{sandbox.prefix}:evidence:{{ev}}:index", 0, -1)}
    assert set(orphans) <= named and index == named, "the replay named the same evidence: nothing is left unnamed"


def test_redis_store_ttl_budget_and_held_evidence(services: Any) -> None:
    client = redis.Redis.from_url(services.redis_url)
    prefix = f"t{time.time_ns()}:evidence"
    scores_key = f"{prefix}:stream:{{cam}}"
    client.hset(scores_key, mapping={"ema": "0.5"})
    image = bytes(10_000)

    def record(n: int, at_ms: int) -> EvidenceRecord:
        return EvidenceRecord(evidence_id("cam", "1", n), "cam", "1", n, 0.9, 0.8, 0.7, "m", at_ms, "trigger")

    # TTL: keys expire with retention; the index forgets them at the next put.
    short = RedisEvidenceStore(client, prefix + "a", retention_s=1, budget_bytes=1_000_000)
    short.put(record(1, 1), image)
    assert short.get(record(1, 1).id) is not None
    assert 0 < client.pttl(f"{prefix}a:{{ev}}:img:{record(1, 1).id}") <= 1000
    time.sleep(1.3)
    assert short.get(record(1, 1).id) is None
    short.put(record(2, 2), image)
    assert short.usage()["items"] == 1 and short.usage()["bytes"] < 11_000
    # Budget: the oldest unlabelled evidence makes room; held evidence is never evicted.
    store = RedisEvidenceStore(client, prefix, retention_s=3600, budget_bytes=35_000, grace_s=0)
    for n in range(3):
        store.put(record(n, 1000 + n), image)
    store.hold([record(0, 1000).id, "f" * 32])  # an id that does not exist is not held
    assert client.smembers(f"{prefix}:{{ev}}:held") == {record(0, 1000).id.encode()}
    store.put(record(3, 1003), image)
    assert store.get(record(0, 1000).id) is not None, "held evidence was evicted"
    assert store.get(record(1, 1001).id) is None, "the oldest unheld evidence should have made room"
    assert client.pttl(f"{prefix}:{{ev}}:img:{record(0, 1000).id}") == -1, "held evidence keeps no TTL"
    assert store.usage()["bytes"] <= 35_000
    # A put that held evidence leaves no room for is refused, and evicts nothing on its way.
    store.hold([record(2, 1002).id])
    with pytest.raises(EvidenceError) as refused:
        store.put(record(4, 1004), bytes(20_000))
    assert refused.value.reason == "budget"
    assert store.get(record(3, 1003).id) is not None, "a refused put evicted unheld evidence"
    with pytest.raises(EvidenceError):
        store.put(record(5, 1005), bytes(40_000))
    store.release([record(0, 1000).id])
    assert client.pttl(f"{prefix}:{{ev}}:img:{record(0, 1000).id}") > 0
    store.put(record(4, 1004), image)  # released evidence makes room again
    assert store.get(record(0, 1000).id) is None and store.get(record(4, 1004).id) is not None
    usage = store.usage()
    assert usage["held"] == 1 and 10_000 < usage["held_bytes"] < 11_000 and usage["bytes"] <= 35_000
    # Evidence younger than the grace period is not evicted for newer evidence: refused instead.
    young = RedisEvidenceStore(client, prefix + "y", retention_s=3600, budget_bytes=25_000, grace_s=60)
    now_ms = int(time.time() * 1000)
    young.put(record(10, now_ms), image)
    young.put(record(11, now_ms), image)
    with pytest.raises(EvidenceError, match="grace"):
        young.put(record(12, now_ms), image)
    assert young.get(record(10, now_ms).id) is not None
    # The scores never pay for evidence.
    assert client.hget(scores_key, "ema") == b"0.5"


def test_the_budget_keeps_evidence_from_pushing_out_scores(tmp_path: Path) -> None:
    """A Redis with maxmemory and allkeys-lru, as many deployments run it: scores survive evidence
    written far past the budget; the same writes without a budget evict scores (the test can fail)."""
    from framewatch.devservices import start_redis, stop_pid

    server = start_redis(tmp_path, extra_args=("--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru"))
    try:
        client = redis.Redis(host=server.host, port=server.port)

        def write_scores(prefix: str) -> list[str]:
            keys = [f"{prefix}:stream:{{cam-{i}}}" for i in range(2000)]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hset(key, mapping={"ema": "0.5", "score": "0.25", "frames": "12"})
            pipe.execute()
            return keys

        def flood(store: RedisEvidenceStore) -> None:
            for n in range(240):  # 12 MB of evidence into an 8 MB Redis
                with contextlib.suppress(EvidenceError, redis.exceptions.ResponseError):
                    store.put(EvidenceRecord(evidence_id("cam", "1", n), "cam", "1", n, 0.9, 0.8, 0.7, "m", n, "trigger"), os.urandom(50_000))

        kept = write_scores("kept")
        store = RedisEvidenceStore(client, "kept:evidence", 3600, 2 * 1024 * 1024, grace_s=0)
        assert store.memory_warning() is None
        flood(store)
        assert sum(client.exists(k) for k in kept) == len(kept), "evidence within its budget pushed out scores"
        assert store.usage()["bytes"] <= 2 * 1024 * 1024
        unbounded = RedisEvidenceStore(client, "lost:evidence", 3600, 100 * 1024 * 1024, grace_s=0)
        assert unbounded.memory_warning() is not None and "maxmemory" in unbounded.memory_warning()  # type: ignore[operator]
        client.delete(*[k for k in client.scan_iter("kept:evidence:*")])
        lost = write_scores("lost")
        flood(unbounded)
        assert sum(client.exists(k) for k in lost + kept) < len(lost) + len(kept), "without a budget, LRU should have evicted scores"
    finally:
        stop_pid(server.pid)


def test_labelled_evidence_is_never_rewritten(services: Any, tmp_path: Path) -> None:
    client = redis.Redis.from_url(services.redis_url)
    record = EvidenceRecord(evidence_id("cam", "1", 0), "cam", "1", 0, 0.9, 0.8, 0.7, "m", 0, "trigger")
    for store in (RedisEvidenceStore(client, f"t{time.time_ns()}:evidence", 3600, 1_000_000), LocalEvidenceStore(tmp_path, 3600, 1_000_000)):
        store.put(record, b"the frame a moderator labelled")
        store.hold([record.id])
        store.put(record, b"another frame under the same id")
        assert store.get(record.id)[1] == b"the frame a moderator labelled", store  # type: ignore[index]
        store.release([record.id])
        store.put(record, b"rewritten once released")
        assert store.get(record.id)[1] == b"rewritten once released", store  # type: ignore[index]


def test_a_release_clears_evidence_whose_record_cannot_be_read(services: Any) -> None:
    client = redis.Redis.from_url(services.redis_url)
    prefix = f"t{time.time_ns()}:evidence"
    store = RedisEvidenceStore(client, prefix, 3600, 1_000_000)
    record = EvidenceRecord(evidence_id("cam", "1", 0), "cam", "1", 0, 0.9, 0.8, 0.7, "m", 0, "trigger")
    store.put(record, b"x" * 1000)
    store.hold([record.id])
    client.set(f"{prefix}:{{ev}}:meta:{record.id}", b"{not json")  # corrupt or foreign data
    store.release([record.id])  # a script error here used to leave the keys forever, untracked
    usage = store.usage()
    assert usage["held"] == 0 and usage["held_bytes"] == 0 and usage["bytes"] == 0
    assert not client.exists(f"{prefix}:{{ev}}:img:{record.id}", f"{prefix}:{{ev}}:meta:{record.id}")


def test_local_store_retention_budget_and_hold(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = LocalEvidenceStore(tmp_path / "ev", retention_s=60, budget_bytes=25_000, clock=lambda: now[0])
    image = bytes(10_000)
    records = [EvidenceRecord(evidence_id("cam", "1", n), "cam", "1", n, 0.9, 0.8, 0.7, "m", n, "trigger") for n in range(4)]
    for n, r in enumerate(records[:2]):
        store.put(r, image)
        path = tmp_path / "ev" / r.id[:2] / f"{r.id}.jpg"
        os.utime(path, (now[0] - 100 + n, now[0] - 100 + n))
    store.hold([records[0].id])
    # records[1] is past retention (written 100 s ago, retention 60 s); records[0] is held.
    assert store.sweep() == 1
    assert store.get(records[0].id) is not None and store.get(records[1].id) is None
    assert store.get("../../etc/passwd") is None and store.record("0" * 31 + "g") is None
    store.put(records[2], image)
    # records[2] was written 5 s ago (by the store's clock): an alert may be about to name it, so the grace protects it.
    path = tmp_path / "ev" / records[2].id[:2] / f"{records[2].id}.jpg"
    os.utime(path, (now[0] - 5, now[0] - 5))
    with pytest.raises(EvidenceError, match="younger than"):
        store.put(records[3], image)
    assert store.get(records[2].id) is not None
    os.utime(path, (now[0] - 30, now[0] - 30))  # past the grace, within retention
    store.put(records[3], image)  # over the budget: the oldest unheld (records[2]) makes room
    assert store.get(records[2].id) is None and store.get(records[3].id) is not None and store.get(records[0].id) is not None
    usage = store.usage()
    assert usage["bytes"] <= 25_000 and usage["held"] == 1
    store.hold([records[3].id])
    with pytest.raises(EvidenceError):
        store.put(records[1], image)


def test_evidence_settings_defaults_are_a_moderators_size() -> None:
    s = EvidenceSettings()
    assert s.backend == "redis" and s.long_side == 480 and 0 < s.near_miss_rate < 1
    assert np.isclose(s.budget_mb, 256)
