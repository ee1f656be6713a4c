"""Stream time as real producers make it, against the real broker, Redis and model: segments with
audio that outlast their video, restarted broadcasts, untimed segments and stills."""

from __future__ import annotations

import io
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import redis

from framewatch.worker.contracts import segment_headers
from framewatch.worker.media import encode_image, encode_segment
from tests.integration.harness import (
    Sandbox,
    WorkerProcess,
    clip,
    committed_offsets,
    end_offsets,
    history_pts,
    offsets_report,
    producer,
    send_segment,
    wait_for,
)

pytestmark = pytest.mark.integration


def encode_with_audio(frames: list[np.ndarray], fps: int, fmt: str) -> tuple[bytes, str, int]:
    """A segment with an audio track that runs past the video, as muxers write it; returns the
    bytes, the content type and the container's duration in ms (what a producer declares)."""
    container_format, video_codec, audio_codec, content_type = {
        "mpegts": ("mpegts", "libx264", "aac", "video/mp2t"),
        "webm": ("webm", "libvpx", "libopus", "video/webm"),
    }[fmt]
    buffer = io.BytesIO()
    rate = 48_000
    with av.open(buffer, mode="w", format=container_format) as container:
        video: Any = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        audio: Any = container.add_stream(audio_codec, rate=rate)
        audio.layout = "mono"
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = int(rate * (len(frames) / fps + 0.025))  # 25 ms of audio past the last frame
        chunk = 960
        for start in range(0, samples, chunk):
            tone = (0.1 * np.sin(np.arange(start, start + chunk) / 20.0)).astype(np.float32)[None, :]
            audio_frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
            audio_frame.sample_rate, audio_frame.pts, audio_frame.time_base = rate, start, Fraction(1, rate)
            for packet in audio.encode(audio_frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    payload = buffer.getvalue()
    with av.open(io.BytesIO(payload)) as probe:
        duration_ms = round((probe.duration or 0) / 1000)
    return payload, content_type, duration_ms


def history(client: redis.Redis, sandbox: Sandbox, stream: str) -> list[dict[str, str]]:
    entries: Any = client.xrange(sandbox.keys.history(stream))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def test_real_producers_stream_time_loses_no_frame(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    expected: dict[str, int] = {}
    # 1. Segments with audio whose container declares a few ms more than the video (4 s at 10 fps).
    for fmt in ("mpegts", "webm"):
        stream = f"audio-{fmt}"
        for segment in range(2):
            payload, content_type, duration_ms = encode_with_audio(clip(segment, violent=False, frames=40), 10, fmt)
            assert duration_ms > 4000, f"{fmt}: the container should outlast the video ({duration_ms} ms)"
            prod.send(sandbox.topic, key=stream.encode(), value=payload,
                      headers=segment_headers(content_type, segment_start_ms=segment * duration_ms, segment_duration_ms=duration_ms))
        expected[stream] = 8
    # 2. A broadcast, then the same stream id restarted at stream time 0.
    for run in range(2):
        for segment in range(3):
            send_segment(prod, sandbox, "restarted", clip(run * 3 + segment, violent=False), start_ms=segment * 2000)
    expected["restarted"] = 12
    # 3. Untimed segments, each encoded on its own (container time restarts at 0), sent in a burst.
    for segment in range(3):
        payload, content_type = encode_segment(clip(10 + segment, violent=False), 10.0, "mpegts")
        prod.send(sandbox.topic, key=b"untimed", value=payload, headers=segment_headers(content_type))
    expected["untimed"] = 6
    # 4. Stills of one camera: without any time, and with increasing captured-at-ms.
    rng = np.random.default_rng(7)
    for index in range(4):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        payload, content_type = encode_image(pixels, "png")
        prod.send(sandbox.topic, key=b"still-bare", value=payload, headers=segment_headers(content_type))
        prod.send(sandbox.topic, key=b"still-captured", value=payload,
                  headers=segment_headers(content_type, captured_at_ms=1_700_000_000_000 + index * 5000))
    expected["still-bare"] = expected["still-captured"] = 4
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log")
    try:
        wait_for(lambda: all(len(history_pts(client, sandbox, s)) >= n for s, n in expected.items()), 120,
                 "every frame of every stream scored")
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 60, "offsets committed")
        time.sleep(1.0)  # anything written twice would show now
    finally:
        code = worker.stop()
    assert code == 0, worker.logs()[-3000:]
    for stream, count in expected.items():
        entries = history(client, sandbox, stream)
        assert len(entries) == count, f"{stream}: {len(entries)} of {count} frames written ({offsets_report(sandbox)})"
    restarted = history(client, sandbox, "restarted")
    assert [int(e["pts_ms"]) for e in restarted] == [0, 1000, 2000, 3000, 4000, 5000] * 2
    assert [e["broadcast"] for e in restarted] == ["1"] * 6 + ["2"] * 6
    for stream in ("untimed", "still-bare", "still-captured"):
        pts = [int(e["pts_ms"]) for e in history(client, sandbox, stream)]
        assert pts == sorted(set(pts)), f"{stream}: stream time must keep increasing: {pts}"
    captured = [int(e["pts_ms"]) for e in history(client, sandbox, "still-captured")]
    assert captured == [1_700_000_000_000 + i * 5000 for i in range(4)]
    assert "truncated" not in worker.logs()
    state = {k.decode(): v.decode() for k, v in client.hgetall(sandbox.keys.stream("restarted")).items()}  # type: ignore[union-attr]
    assert state["frames"] == "12" and state["broadcast"] == "2"


def test_a_truncated_segment_has_its_frames_scored_and_is_reported(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    prod = producer(sandbox)
    payload, content_type = encode_segment(clip(3, violent=False, frames=40), 10.0, "mpegts")
    cut = payload[: (len(payload) // 2 // 188) * 188 + 100]  # half of it, cut inside a packet
    prod.send(sandbox.topic, key=b"cut", value=cut, headers=segment_headers(content_type, segment_start_ms=0, segment_duration_ms=4000))
    send_segment(prod, sandbox, "cut", clip(4, violent=False), start_ms=4000)
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log")
    try:
        wait_for(lambda: 4000 in history_pts(client, sandbox, "cut"), 90, "the segment after the cut one scored")
        wait_for(lambda: committed_offsets(sandbox) == end_offsets(sandbox), 60, "offsets committed")
    finally:
        worker.stop()
    pts = history_pts(client, sandbox, "cut")
    assert pts[0] == 0 and pts[-2:] == [4000, 5000] and len(pts) >= 3, pts
    assert "truncated segment" in worker.logs()
