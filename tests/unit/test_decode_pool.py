"""The decode pool's supervision with real processes: crash blame, stuck decodes, envelopes."""

from __future__ import annotations

import os
import time

from framewatch.worker.deadletter import DLQ_ENVELOPE_BYTES, dlq_envelope
from framewatch.worker.decode import DecodeError, DecodeRequest, DecodeResult
from framewatch.worker.decode_pool import ERROR_CRASH, ERROR_TIMEOUT, DecodeJob, DecodePool


def fake_decode(request: DecodeRequest) -> DecodeResult:
    """Crashes the process on b"crash", hangs on b"hang", else answers after a moment."""
    if request.payload == b"crash":
        os._exit(9)
    if request.payload == b"hang":
        while True:
            time.sleep(1)
    time.sleep(0.05)
    return DecodeResult([], decoded=len(request.payload), seconds=0.0)


def run(pool: DecodePool, jobs: list[DecodeJob], timeout: float = 60) -> list[DecodeJob]:
    failed: list[DecodeJob] = []
    deadline = time.monotonic() + timeout
    while not all(job.finished() for job in jobs):
        assert time.monotonic() < deadline, "jobs did not finish"
        failed += pool.pump()
        time.sleep(0.02)
    return failed


def request(payload: bytes) -> DecodeRequest:
    return DecodeRequest(payload, None, 8, 8)


def test_only_the_message_that_crashes_the_decoder_is_blamed() -> None:
    pool = DecodePool(workers=1, fn=fake_decode)
    try:
        jobs = [DecodeJob(request(b"good%d" % i)) for i in range(6)]
        jobs.insert(2, DecodeJob(request(b"crash")))
        for job in jobs:
            pool.add(job)
        failed = run(pool, jobs)
    finally:
        pool.close()
    assert [job.request.payload for job in failed] == [b"crash"]
    assert isinstance(failed[0].failure, DecodeError) and failed[0].failure.error_type == ERROR_CRASH
    for job in jobs:
        if job.request.payload != b"crash":
            assert job.outcome().decoded == len(job.request.payload)  # every good message decoded
    assert pool.crashes >= 2


def test_a_stuck_decode_is_killed_and_the_others_go_on() -> None:
    pool = DecodePool(workers=1, max_decode_seconds=0.5, kill_grace_s=0.5, fn=fake_decode)
    try:
        jobs = [DecodeJob(request(b"a")), DecodeJob(request(b"hang")), DecodeJob(request(b"b"))]
        for job in jobs:
            pool.add(job)
        started = time.monotonic()
        failed = run(pool, jobs)
    finally:
        pool.close()
    assert [job.request.payload for job in failed] == [b"hang"]
    assert failed[0].failure is not None and failed[0].failure.error_type == ERROR_TIMEOUT
    assert jobs[2].outcome().decoded == 1 and time.monotonic() - started < 30


def test_close_does_not_wait_for_a_stuck_decoder() -> None:
    pool = DecodePool(workers=1, fn=fake_decode)
    pool.add(DecodeJob(request(b"hang")))
    time.sleep(1.0)
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 10


def test_a_dead_letter_too_large_becomes_an_envelope() -> None:
    value = bytes(range(256)) * 8192  # 2 MiB
    trimmed, headers = dlq_envelope(value, [("error-type", b"not-media"), ("x", b"y" * 5000)])
    names = dict(headers)
    assert len(trimmed) == DLQ_ENVELOPE_BYTES and value.startswith(trimmed)
    assert names["dlq-trimmed"] == b"1" and names["original-size"] == str(len(value)).encode()
    assert len(names["original-sha256"]) == 64 and len(names["x"]) == 1024 and names["error-type"] == b"not-media"
