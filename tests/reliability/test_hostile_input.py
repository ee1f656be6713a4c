"""Hostile input: every bad message ends in the DLQ with its error type while good ones are scored.

All media is real (PyAV-encoded) and then damaged, or crafted byte-exact where the point is a
header that lies (a PNG declaring 100 000 × 100 000 pixels).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import redis

from framewatch.worker import contracts
from framewatch.worker.media import encode_segment
from tests.integration.harness import (
    Sandbox,
    WorkerProcess,
    clip,
    committed_offsets,
    end_offsets,
    history_pts,
    offsets_report,
    producer,
    read_dlq,
    wait_for,
)

pytestmark = pytest.mark.reliability

MAX_MESSAGE_BYTES = 400_000
MAX_FRAMES = 50


def png(width: int, height: int, rows: bytes | None = None, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG whose IHDR says width × height; ``rows`` is the (compressed) image data as given."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows or zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def png_bomb(side: int = 20_000) -> bytes:
    """1-bit greyscale, all zero: side² pixels in a few tens of KB."""
    row = b"\x00" + b"\x00" * (side // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png(side, side, data, bit_depth=1, colour_type=0)


def flip_bits(payload: bytes, every: int = 97, start: int = 600) -> bytes:
    """Dense damage to the H.264 data, leaving MPEG-TS packet headers (first 4 bytes of 188) intact."""
    damaged = bytearray(payload)
    for position in range(start, len(damaged), every):
        if position % 188 >= 4:
            damaged[position] ^= 0x10
    return bytes(damaged)


def hostile_messages() -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """(expected error-type, key, value, headers) for every case of the issue."""
    frames = clip(7, violent=True)
    ts, ts_type = encode_segment(frames, 10.0, "mpegts")
    _, mp4_type = encode_segment(frames, 10.0, "mp4")
    many, _ = encode_segment(clip(8, violent=False, frames=MAX_FRAMES + 10), 10.0, "mpegts")
    bomb, _ = encode_segment([np.zeros((4096, 4096, 3), np.uint8)] * 2, 10.0, "mpegts")
    hls = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n"
    concat = b"ffconcat version 1.0\nfile /etc/hostname\n"

    def h(content_type: str | None, duration_ms: int | None = None) -> list[tuple[str, bytes]]:
        headers = contracts.segment_headers(content_type or "", segment_start_ms=0, segment_duration_ms=duration_ms)
        return headers if content_type else headers[1:]

    return [
        ("decode-error", b"bitflip-ts", flip_bits(ts), h(ts_type, 2000)),
        ("empty-message", b"zero-bytes", b"", h(ts_type)),
        ("not-media", b"not-media", b"GIF89a? no: " + bytes(range(256)) * 8, h(mp4_type)),
        ("not-media", b"not-media-probed", bytes(range(256)) * 8, h(None)),
        ("not-media", b"hls-playlist", hls, h(None)),
        ("not-media", b"concat-list", concat, h(None)),
        ("frame-too-large", b"bomb-h264", bomb, h(ts_type)),
        ("frame-too-large", b"bomb-png", png_bomb(), h("image/png")),
        ("frame-too-large", b"png-100k", png(100_000, 100_000), h("image/png")),
        ("frame-too-large", b"png-100k-probed", png(100_000, 100_000), h(None)),
        ("too-many-frames", b"many-frames", many, h(ts_type)),
        ("too-large", b"over-limit", b"\x47" + bytes(MAX_MESSAGE_BYTES), h(ts_type)),
        ("bad-stream-id", b"\xff\xfe-not-utf8", ts, h(ts_type)),
        ("unsupported-content-type", b"avi", ts, h("video/x-msvideo")),
        ("missing-stream-id", b"", ts, h(ts_type)),
        ("bad-header", b"bad-header", ts, [*h(ts_type), ("segment-start-ms", b"yesterday")]),
    ]


def truncated_messages() -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Segments cut short: what decodes is scored (or, if nothing does, the message is dead-lettered)."""
    frames = clip(7, violent=True)
    ts, ts_type = encode_segment(frames, 10.0, "mpegts")
    mp4, mp4_type = encode_segment(frames, 10.0, "mp4")
    webm, webm_type = encode_segment(frames, 10.0, "webm")

    def h(content_type: str) -> list[tuple[str, bytes]]:
        return contracts.segment_headers(content_type, segment_start_ms=0, segment_duration_ms=2000)

    return [(b"trunc-ts", ts[: len(ts) * 3 // 5], h(ts_type)), (b"trunc-ts-aligned", ts[: len(ts) // 2 // 188 * 188], h(ts_type)),
            (b"trunc-mp4", mp4[: len(mp4) * 3 // 5], h(mp4_type)), (b"trunc-webm", webm[: len(webm) * 3 // 10], h(webm_type))]


def test_every_hostile_message_is_dead_lettered_and_good_ones_are_scored(sandbox: Sandbox, exported_model: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    cases = hostile_messages()
    prod = producer(sandbox)
    for key, value, headers in truncated_messages():
        prod.send(sandbox.topic, key=key, value=value, headers=headers, partition=1)
    good = clip(3, violent=False)
    sent_good = 0
    for index, (_, key, value, headers) in enumerate(cases):
        payload, content_type = encode_segment(good, 10.0, "mpegts")
        headers_good = contracts.segment_headers(content_type, segment_start_ms=index * 2000, segment_duration_ms=2000)
        # Interleaved on one partition with the hostile messages: the worker must keep going.
        prod.send(sandbox.topic, key=b"good", value=payload, headers=headers_good, partition=0)
        sent_good += 1
        prod.send(sandbox.topic, key=key or None, value=value, headers=headers, partition=0)
    prod.close()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_DECODE__MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
                           FRAMEWATCH_DECODE__MAX_FRAMES=str(MAX_FRAMES))
    try:
        expected = [t * 1000 for t in range(sent_good * 2)]
        wait_for(lambda: history_pts(client, sandbox, "good") == expected, 180, "every good segment scored")
        # ">=": the embedded broker reported the end of partition 1 (four records sent in one batch)
        # as 3 while the worker had read, and committed, offsets 0 to 3.
        try:
            wait_for(lambda: all(c >= end_offsets(sandbox)[p] for p, c in committed_offsets(sandbox).items()), 60, "every offset committed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {offsets_report(sandbox)}") from None
        # Committed means every dead letter was acknowledged: read them all, without waiting for more.
        dead_all = read_dlq(sandbox, expected=len(cases) + len(truncated_messages()), timeout_s=5)
        dead = [r for r in dead_all if dict(r.headers)["source-partition"] == b"0"]
    finally:
        worker.stop()
    assert worker.process.returncode == 0
    # Truncated segments keep their good frames: scored, not dead-lettered (unless nothing decodes).
    dead_truncated = {r.key: dict(r.headers)["error-type"] for r in dead_all if dict(r.headers)["source-partition"] == b"1"}
    for key, _, _ in truncated_messages():
        pts = history_pts(client, sandbox, key.decode())
        if key in dead_truncated:
            assert not pts and dead_truncated[key] in (b"truncated", b"decode-error"), f"{key!r}: {pts} {dead_truncated[key]!r}"
        else:
            assert pts and set(pts) <= {0, 1000}, f"{key!r}: {pts}"
    assert {b"trunc-ts", b"trunc-ts-aligned"} - set(dead_truncated) == {b"trunc-ts", b"trunc-ts-aligned"}, "MPEG-TS cut short is scored"
    got = {int(dict(r.headers)["source-offset"]): dict(r.headers)["error-type"].decode() for r in dead}
    want = {2 * i + 1: case[0] for i, case in enumerate(cases)}
    mismatched = {cases[(o - 1) // 2][1]: (want[o], got.get(o)) for o in want if got.get(o) != want[o]}
    assert not mismatched, f"(expected, got) error types: {mismatched}"
    # The dead-letter copy is the original message: key, value and headers unchanged.
    for record in dead:
        index = (int(dict(record.headers)["source-offset"]) - 1) // 2
        _, key, value, headers = cases[index]
        assert (record.key or b"") == key and record.value == value
        assert record.headers[: len(headers)] == headers
