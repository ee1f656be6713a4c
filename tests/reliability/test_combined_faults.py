"""Dependencies misbehaving the way real ones do, and faults combined: decoders killed with many
messages in flight, a dead letter over 1 MiB, Redis failing mid-batch, a stream over two
partitions, a stuck decoder, a failing engine, a record the Kafka client cannot parse.

Each asserts the promise: every frame of every valid message scored or its message in the DLQ,
nothing committed early, and the worker's health telling the truth (running, or exited non-zero).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest
import redis

from framewatch.worker.contracts import segment_headers
from framewatch.worker.media import encode_segment
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
    wait_for,
)
from tests.reliability.conftest import report

pytestmark = pytest.mark.reliability


def decoders(worker: WorkerProcess) -> list[psutil.Process]:
    children = psutil.Process(worker.process.pid).children(recursive=True)
    return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]


def all_scored_or_dead(client: redis.Redis, sandbox: Sandbox, streams: list[str], expected: list[int], dead_keys: set[bytes]) -> None:
    for stream in streams:
        pts = history_pts(client, sandbox, stream)
        if stream.encode() in dead_keys:
            continue
        assert sorted(set(pts)) == expected, f"{stream}: frames lost ({sorted(set(expected) - set(pts))[:5]})"


def test_two_decoder_crashes_blame_no_good_message(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    streams = [f"c{i}" for i in range(4)]
    prod = producer(sandbox)
    segments = 15
    for seg in range(segments):
        for i, stream in enumerate(streams):
            send_segment(prod, sandbox, stream, clip(i, violent=False), seg * 2000)
    prod.close()
    expected = [t * 1000 for t in range(segments * 2)]
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_DECODE__WORKERS="1")
    try:
        wait_for(lambda: any(history_pts(client, sandbox, s) for s in streams), 90, "first scores")
        for _ in range(2):
            victims = decoders(worker)
            assert victims, "no decoder process found"
            for victim in victims:
                victim.kill()
            time.sleep(0.5)
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 120, "everything committed")
        assert worker.process.poll() is None, "the worker keeps running after two decoder crashes"
    finally:
        code = worker.stop()
    assert code == 0, worker.logs()[-3000:]
    dead = read_dlq(sandbox, expected=1, timeout_s=3)
    all_scored_or_dead(client, sandbox, streams, expected, {r.key for r in dead})
    assert len(dead) == 0, "external kills are not any message's fault"
    assert "decoder crashed" in worker.logs()
    report("two_decoder_crashes", messages=segments * len(streams), dead_lettered=len(dead))


def test_a_dead_letter_over_1_mib_is_written_and_committed(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    big = b"\x00not video" * 110_000  # 1.1 MB of not-media
    prod.send(sandbox.topic, key=b"big", value=big, headers=[("content-type", b"video/mp2t")])
    send_segment(prod, sandbox, "big", clip(1, violent=False), 0)
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log")
    try:
        dead = read_dlq(sandbox, expected=1, timeout_s=60)
        wait_for(lambda: history_pts(client, sandbox, "big") == [0, 1000], 60, "the next message scored")
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 60, "committed past the dead letter")
    finally:
        code = worker.stop()
    assert code == 0, worker.logs()[-3000:]
    assert len(dead) == 1 and dead[0].value == big and dict(dead[0].headers)["error-type"] == b"not-media"


def test_redis_pausing_while_a_batch_holds_a_known_and_a_new_stream_loses_nothing(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    send_segment(prod, sandbox, "known", clip(1, violent=False), 0)
    prod.flush()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_REDIS__SOCKET_TIMEOUT_S="0.5",
                           FRAMEWATCH_BATCH__MAX_DELAY_MS="200")
    try:
        wait_for(lambda: history_pts(client, sandbox, "known") == [0, 1000], 90, "the known stream scored")
        client.execute_command("CLIENT", "PAUSE", 2500, "ALL")  # every command of the worker times out meanwhile
        send_segment(prod, sandbox, "known", clip(1, violent=False), 2000)
        send_segment(prod, sandbox, "new", clip(2, violent=False), 0)
        prod.flush()
        wait_for(lambda: history_pts(client, sandbox, "known") == [0, 1000, 2000, 3000] and history_pts(client, sandbox, "new") == [0, 1000],
                 60, "both streams complete after the pause")
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 60, "committed")
    finally:
        prod.close()
        code = worker.stop()
    assert code == 0
    assert client.hget(sandbox.keys.stream("known"), "frames") == b"4"


def test_a_stream_id_header_over_alternating_keys_loses_no_frame(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    partitions: set[int] = set()
    keys = [b"left", b"right", b"up", b"down"]
    for seg in range(20):
        payload, content_type = encode_segment(clip(seg % 3, violent=False), 10.0, "mpegts")
        headers = segment_headers(content_type, segment_start_ms=seg * 2000, segment_duration_ms=2000, stream_id="S")
        meta = prod.send(sandbox.topic, key=keys[seg % 2 if len(partitions) != 1 or seg < 2 else 2 + seg % 2], value=payload, headers=headers).get(10)
        partitions.add(meta.partition)
    prod.close()
    assert len(partitions) >= 2, "the keys should spread over partitions"
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log")
    try:
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 120, "committed")
    finally:
        code = worker.stop()
    assert code == 0
    assert sorted(set(history_pts(client, sandbox, "S"))) == [t * 1000 for t in range(40)]
    assert len(history_pts(client, sandbox, "S")) == 40
    assert "stream-id header differs from the key" in worker.logs()


def test_a_stuck_decoder_is_killed_and_sigterm_always_ends_the_worker(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    send_segment(prod, sandbox, "hang", clip(1, violent=False), 0)
    for seg in range(3):
        send_segment(prod, sandbox, "fine", clip(2, violent=False), seg * 2000)
    prod.flush()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_FAULTS__DECODE_HANG_STREAM="hang",
                           FRAMEWATCH_DECODE__MAX_DECODE_SECONDS="2", FRAMEWATCH_DECODE__KILL_GRACE_S="1",
                           FRAMEWATCH_SHUTDOWN_GRACE_S="6")
    try:
        dead = read_dlq(sandbox, expected=1, timeout_s=60)
        wait_for(lambda: len(history_pts(client, sandbox, "fine")) == 6, 60, "the other stream scored")
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 60, "committed past the stuck message")
        assert dict(dead[0].headers)["error-type"] == b"decode-timeout"
        # Another stuck decode, then SIGTERM while it hangs: the worker still ends within its grace.
        send_segment(prod, sandbox, "hang", clip(1, violent=False), 2000)
        prod.flush()
        time.sleep(1.0)
        started = time.monotonic()
        code = worker.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - started
    finally:
        prod.close()
        worker.kill_group()
    assert code == 0 and took < 15, f"exit {code} after {took:.1f} s"
    report("stuck_decoder", sigterm_to_exit_s=round(took, 1))


def test_an_engine_failure_ends_the_process_non_zero(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    for seg in range(4):
        send_segment(prod, sandbox, "e", clip(1, violent=False), seg * 2000)
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_FAULTS__INFER_FAIL_AFTER="1",
                           FRAMEWATCH_BATCH__MAX_BATCH="2")
    code = wait_for(lambda: worker.process.poll(), 90, "the worker to exit", interval=0.2)
    worker.stop()
    assert code != 0, "a dead inference thread must end the process"
    assert "inference thread died" in worker.logs()
    committed = sum(committed_offsets(sandbox).values())
    assert committed * 2 <= len(history_pts(client, sandbox, "e")), "nothing committed that was not written"


class RawHeaderKey(str):
    """A header key kafka-python will write as bytes that are not UTF-8."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return b"x-\xff\xfe"


def test_a_record_the_client_cannot_parse_is_skipped(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    payload, content_type = encode_segment(clip(1, violent=False), 10.0, "mpegts")
    good = segment_headers(content_type, segment_start_ms=0, segment_duration_ms=2000)
    prod.send(sandbox.topic, key=b"u", value=payload, headers=good, partition=0).get(10)
    prod.send(sandbox.topic, key=b"u", value=payload, headers=[(RawHeaderKey("x"), b"1")], partition=0).get(10)
    later = segment_headers(content_type, segment_start_ms=2000, segment_duration_ms=2000)
    prod.send(sandbox.topic, key=b"u", value=payload, headers=later, partition=0).get(10)
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log")
    try:
        wait_for(lambda: history_pts(client, sandbox, "u") == [0, 1000, 2000, 3000], 90, "the good records around it scored")
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 60, "committed past the unreadable record")
        dead = read_dlq(sandbox, expected=1, timeout_s=30)
        started = time.monotonic()
        code = worker.stop(signal.SIGTERM, timeout=30)
    finally:
        worker.kill_group()
    assert code == 0 and time.monotonic() - started < 15
    assert dict(dead[0].headers)["error-type"] == b"unreadable-record" and dict(dead[0].headers)["source-offset"] == b"1"
