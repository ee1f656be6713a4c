"""`framewatch produce`: cut a video into segments and publish them per the input contract."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from kafka import KafkaProducer

from framewatch.worker.contracts import segment_headers
from framewatch.worker.media import Segment, cut_segments, read_video


def publish_segments(producer: KafkaProducer, topic: str, stream_id: str, segments: Iterable[Segment], realtime: bool = False,
                     segment_seconds: float = 2.0, on_sent: object = None, broadcast_id: str | None = None,
                     metadata: dict[str, str] | None = None) -> int:
    started = time.monotonic()
    sent = 0
    for segment in segments:
        if realtime:
            # A live source emits a segment when its last frame has been captured.
            due = started + (sent + 1) * segment_seconds
            time.sleep(max(0.0, due - time.monotonic()))
        now_ms = int(time.time() * 1000)
        headers = segment_headers(segment.content_type, segment_start_ms=segment.start_ms, captured_at_ms=now_ms, produced_at_ms=now_ms,
                                  segment_duration_ms=segment.duration_ms, broadcast_id=broadcast_id, metadata=metadata)
        producer.send(topic, key=stream_id.encode(), value=segment.payload, headers=headers)
        sent += 1
        if callable(on_sent):
            on_sent(segment)
    producer.flush()
    return sent


def produce_file(producer: KafkaProducer, topic: str, video: Path, stream_id: str, segment_seconds: float = 2.0, fmt: str = "mpegts",
                 loop: bool = False, realtime: bool = False, max_segments: int | None = None, verbose: bool = True,
                 start_ms: int = 0, broadcast_id: str | None = None, metadata: dict[str, str] | None = None) -> int:
    total = 0
    offset_ms = start_ms
    while True:
        frames, fps, _ = read_video(video)
        ends: list[int] = []

        def report(segment: Segment, fps: float = fps, ends: list[int] = ends) -> None:
            ends.append(segment.start_ms + round(segment.frames / fps * 1000))
            if verbose:
                print(f"{stream_id}: segment {segment.index} at {segment.start_ms} ms, {segment.frames} frames, {len(segment.payload)} bytes")

        segments = cut_segments(frames, fps, segment_seconds, fmt, start_ms=offset_ms)
        if max_segments is not None:
            segments = (s for i, s in enumerate(segments) if total + i < max_segments)
        total += publish_segments(producer, topic, stream_id, segments, realtime, segment_seconds, report, broadcast_id, metadata)
        offset_ms = max(ends, default=offset_ms)
        if not loop or (max_segments is not None and total >= max_segments):
            return total
