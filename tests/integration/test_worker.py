"""The worker against the real broker, real Redis and a real exported model."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import redis

from framewatch.worker import contracts
from tests.integration.harness import (
    Sandbox,
    WorkerProcess,
    clip,
    committed_offsets,
    end_offsets,
    history_pts,
    producer,
    read_dlq,
    send_image,
    send_segment,
    wait_for,
)

pytestmark = pytest.mark.integration

FORMATS = ["mpegts", "mp4", "webm", "mkv", "flv"]


def test_streams_in_every_container_and_still_images_are_scored(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    expected: dict[str, list[int]] = {}
    for index, fmt in enumerate(FORMATS):
        stream = f"cam-{fmt}"
        frames = clip(index, violent=index % 2 == 1)
        for segment in range(2):  # 2 s segments at 10 fps, sampled at 1 fps: 2 frames each
            send_segment(prod, sandbox, stream, frames, start_ms=segment * 2000, fmt=fmt, with_content_type=index != 2)
        expected[stream] = [0, 1000, 2000, 3000]
    rng = np.random.default_rng(0)
    for index, fmt in enumerate(["jpeg", "png", "webp"]):
        send_image(prod, sandbox, f"still-{fmt}", rng.integers(0, 255, (80, 120, 3), dtype=np.uint8), fmt, start_ms=5000 + index)
        expected[f"still-{fmt}"] = [5000 + index]
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log")
    try:
        wait_for(lambda: all(len(history_pts(client, sandbox, s)) >= len(v) for s, v in expected.items()), 90, "all streams scored")
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 60, "offsets committed")
    finally:
        code = worker.stop()
    assert code == 0, worker.logs()[-3000:]
    for stream, pts in expected.items():
        assert history_pts(client, sandbox, stream) == pts, f"{stream}: history out of order or incomplete"
        state = {k.decode(): v.decode() for k, v in client.hgetall(sandbox.keys.stream(stream)).items()}  # type: ignore[union-attr]
        for field in (contracts.F_SCORE, contracts.F_EMA, contracts.F_MAX_RECENT, contracts.F_FRAMES, contracts.F_PTS_MS,
                      contracts.F_UPDATED_AT_MS, contracts.F_MODEL):
            assert field in state, f"{stream} lacks {field}"
        assert 0.0 <= float(state[contracts.F_SCORE]) <= 1.0 and 0.0 <= float(state[contracts.F_EMA]) <= 1.0
        assert int(state[contracts.F_FRAMES]) == len(pts) and int(state[contracts.F_PTS_MS]) == pts[-1]
        assert client.ttl(sandbox.keys.stream(stream)) > 0
        assert client.zscore(sandbox.keys.active, stream) is not None
    assert "engine selected" in worker.logs()


def test_corrupt_message_goes_to_dlq_and_the_next_is_scored(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    good = clip(1, violent=False)
    payload_frames = good
    send_segment(prod, sandbox, "cam-a", payload_frames, 0)
    prod.send(sandbox.topic, key=b"cam-a", value=b"\x00\x01 definitely not video " * 20, headers=[("content-type", b"video/mp2t")])
    send_segment(prod, sandbox, "cam-a", payload_frames, 2000)
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log")
    try:
        wait_for(lambda: history_pts(client, sandbox, "cam-a") == [0, 1000, 2000, 3000], 90, "both good segments scored")
        dead = read_dlq(sandbox, expected=1)
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 30, "offsets committed past the bad message")
    finally:
        worker.stop()
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["error-type"] in (b"not-media", b"decode-error")
    assert headers["source-topic"] == sandbox.topic.encode() and headers["source-offset"] == b"1"
    assert dead[0].key == b"cam-a" and dead[0].value.startswith(b"\x00\x01 definitely not video")


def test_sigterm_drains_in_flight_work_and_commits(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    streams = [f"s{i}" for i in range(4)]
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log")
    try:
        wait_for(lambda: '"partitions assigned"' in worker.logs() and "[0, 1, 2, 3]" in worker.logs(), 60, "assignment")
        for seg in range(4):
            for i, stream in enumerate(streams):
                send_segment(prod, sandbox, stream, clip(i, violent=False), seg * 2000)
        prod.close()
        wait_for(lambda: any(history_pts(client, sandbox, s) for s in streams), 60, "first scores")
    finally:
        code = worker.stop(signal.SIGTERM)
    assert code == 0
    logs = worker.logs()
    assert "draining" in logs and "worker stopped" in logs
    committed = committed_offsets(sandbox)
    # Everything committed was written: for each stream, the committed messages' frames are in Redis.
    written = sum(len(history_pts(client, sandbox, s)) for s in streams)
    assert sum(committed.values()) * 2 <= written


@pytest.mark.slow  # ~26 s: the reliability suite kills workers too (test_faults, test_combined_faults); `make test-slow`
def test_sigkill_and_restart_lose_nothing_and_rescore_only_uncommitted(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    streams = [f"k{i}" for i in range(6)]
    segments = 8
    for seg in range(segments):
        for i, stream in enumerate(streams):
            send_segment(prod, sandbox, stream, clip(i, violent=i % 2 == 0), seg * 2000)
    prod.close()
    # Throttled so that the kill lands mid-run however fast the machine: small polls, batches of 1.
    first = WorkerProcess(sandbox, exported_model, tmp_path / "first.log", FRAMEWATCH_BATCH__MAX_BATCH="1",
                          FRAMEWATCH_KAFKA__MAX_POLL_RECORDS="1", FRAMEWATCH_BATCH__MAX_INFLIGHT_MESSAGES="2")
    try:
        wait_for(lambda: sum(len(history_pts(client, sandbox, s)) for s in streams) >= 3, 90, "some scores before the kill", interval=0.05)
    finally:
        first.stop(signal.SIGKILL)
    committed_at_kill = sum(committed_offsets(sandbox).values())
    second = WorkerProcess(sandbox, exported_model, tmp_path / "second.log")
    try:
        expected = [t * 1000 for t in range(segments * 2)]
        wait_for(lambda: all(history_pts(client, sandbox, s) == expected for s in streams), 120, "every segment scored after restart")
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 30, "all committed")
    finally:
        second.stop()
    total = segments * len(streams)
    assert committed_at_kill < total, "the kill came too late to test anything"
    for stream in streams:
        assert history_pts(client, sandbox, stream) == expected, f"{stream}: a frame was lost or written twice"
    # The restarted worker re-read exactly the uncommitted messages and skipped frames already written.
    summary = json.loads(next(line for line in second.logs().splitlines() if '"worker stopped"' in line))
    assert summary["records"] == total - committed_at_kill
    assert summary["scored_frames"] + summary["replayed_frames"] == 2 * summary["records"]


def test_worker_modules_never_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, framewatch.cli.main, framewatch.worker.service, framewatch.cli.worker, framewatch.worker.decode, framewatch.engines, framewatch.engines.onnxrt; "
            "framewatch.cli.main.build_parser(); assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_produce_cli_metrics_health_and_score_lookups(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    import subprocess
    import sys
    import urllib.request

    from framewatch.devservices import free_port
    from framewatch.worker.media import encode_segment
    from framewatch.worker.redis_io import Scores

    video = tmp_path / "cam.mp4"
    payload, _ = encode_segment(clip(3, violent=True, frames=60), 10.0, "mp4")  # a 6 s video file
    video.write_bytes(payload)
    env_flags = ["--bootstrap-servers", sandbox.bootstrap, "--topic", sandbox.topic]
    produced = subprocess.run([sys.executable, "-m", "framewatch.cli", "produce", str(video), "--stream-id", "cam-9",
                               "--segment-seconds", "2", "--format", "webm", "--quiet", *env_flags],
                              capture_output=True, text=True, timeout=120)
    assert produced.returncode == 0, produced.stderr
    assert "sent 3 segments" in produced.stderr
    port = free_port()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_METRICS_PORT=str(port),
                           FRAMEWATCH_METRICS_HOST="127.0.0.1", FRAMEWATCH_SCORING__ALERT_ON="0.0001", FRAMEWATCH_SCORING__ALERT_OFF="0.00005")
    client = redis.Redis.from_url(sandbox.redis_url)
    try:
        wait_for(lambda: history_pts(client, sandbox, "cam-9") == [0, 1000, 2000, 3000, 4000, 5000], 90, "the produced video scored")

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        assert get("/healthz")[0] == 200
        wait_for(lambda: get("/readyz")[0] == 200, 30, "readiness")
        # The main loop counts a message as scored when it takes its completion (within a poll of the write).
        metrics = wait_for(lambda: (lambda text: text if 'framewatch_messages_total{outcome="scored"} 3.0' in text else None)(get("/metrics")[1]),
                           10, "the messages counted as scored")
        assert "framewatch_frames_scored_total 6.0" in metrics
        assert "framewatch_batch_size_count" in metrics and "framewatch_end_to_end_seconds_count" in metrics
        assert 'framewatch_alerts_total{event="raise"} 1.0' in metrics
    finally:
        worker.stop()
    scores = Scores(client, sandbox.prefix)
    assert scores.get("cam-9")["frames"] == 6  # type: ignore[index]
    assert [row["pts_ms"] for row in scores.history("cam-9", last=2)] == [4000, 5000]
    assert scores.top(5)[0]["stream"] == "cam-9"
    alerts = scores.alerts()
    assert alerts and alerts[0]["stream"] == "cam-9" and alerts[0]["event"] == "raise"
    flags = ["--redis-url", sandbox.redis_url]
    env = {"FRAMEWATCH_REDIS__PREFIX": sandbox.prefix}
    import os

    cli_env = {**os.environ, **env}
    top = subprocess.run([sys.executable, "-m", "framewatch.cli", "scores", "top", "--json", *flags], capture_output=True, text=True, env=cli_env, timeout=60)
    assert json.loads(top.stdout)[0]["stream"] == "cam-9"
    got = subprocess.run([sys.executable, "-m", "framewatch.cli", "scores", "get", "cam-9", *flags], capture_output=True, text=True, env=cli_env, timeout=60)
    assert json.loads(got.stdout)["pts_ms"] == 5000
    missing = subprocess.run([sys.executable, "-m", "framewatch.cli", "scores", "get", "nobody", *flags], capture_output=True, text=True, env=cli_env, timeout=60)
    assert missing.returncode == 1 and "no scores" in missing.stderr
