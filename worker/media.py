"""Encoding real media with PyAV: segments for `framewatch produce`, tests and benchmarks.

Segments are re-encoded so that each starts on a keyframe and stands alone, the way a
packager (HLS/DASH/SRT ingest) cuts a live stream.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

SEGMENT_FORMATS = {
    # name: (container format, codec, content type, container options)
    "mpegts": ("mpegts", "libx264", "video/mp2t", {}),
    "mp4": ("mp4", "libx264", "video/mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof"}),
    "webm": ("webm", "libvpx", "video/webm", {}),
    "mkv": ("matroska", "libx264", "video/x-matroska", {}),
    "flv": ("flv", "libx264", "video/x-flv", {}),
}
IMAGE_FORMATS = {"jpeg": ("mjpeg", "image/jpeg"), "png": ("png", "image/png"), "webp": ("libwebp", "image/webp")}


@dataclass(frozen=True)
class Segment:
    index: int
    start_ms: int
    payload: bytes
    content_type: str
    frames: int
    duration_ms: int | None = None


def encode_segment(frames: list[np.ndarray], fps: float, fmt: str = "mpegts", crf: int = 28, gop: int | None = None) -> tuple[bytes, str]:
    """Encode RGB frames (H×W×3 uint8, even sizes) into one self-contained segment: one keyframe,
    or (H.264) one every ``gop`` frames."""
    container_format, codec, content_type, options = SEGMENT_FORMATS[fmt]
    buffer = io.BytesIO()
    height, width = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(buffer, mode="w", format=container_format, options=dict(options)) as container:
        stream: Any = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            keyint = str(gop or max(1, len(frames)))
            stream.options = {"crf": str(crf), "preset": "veryfast", "g": keyint, "keyint_min": keyint, "sc_threshold": "0", "bf": "0"}
        elif codec == "libvpx":
            stream.options = {"crf": "30", "b": "500k", "deadline": "realtime", "cpu-used": "8"}
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1) / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue(), content_type


def encode_image(pixels: np.ndarray, fmt: str = "jpeg") -> tuple[bytes, str]:
    codec, content_type = IMAGE_FORMATS[fmt]
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    context: Any = av.CodecContext.create(codec, "w")
    context.width, context.height = pixels.shape[1], pixels.shape[0]
    context.pix_fmt = {"mjpeg": "yuvj420p", "png": "rgb24", "libwebp": "yuv420p"}[codec]
    context.time_base = Fraction(1, 25)
    packets = context.encode(frame.reformat(format=context.pix_fmt)) + context.encode(None)
    return b"".join(bytes(p) for p in packets), content_type


def read_video(path: Path) -> tuple[Iterator[tuple[float, np.ndarray]], float, tuple[int, int]]:
    """Decoded RGB frames of a video file with their times; also its frame rate and (width, height) rounded to even."""
    from framewatch.worker.decode import quarter_turns

    with av.open(str(path)) as probe:  # a phone's portrait video: stored landscape, sent upright
        turns = next((quarter_turns(frame) for frame in probe.decode(video=0)), 0)
    container = av.open(str(path))
    stream = container.streams.video[0]
    fps = float(stream.average_rate or 25)
    width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        try:
            first: float | None = None
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / fps
                first = t if first is None else first
                pixels = frame.to_ndarray(format="rgb24", width=width, height=height)
                yield t - first, np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels
        finally:
            container.close()

    return frames(), fps, (height, width) if turns % 2 else (width, height)


def cut_segments(frames: Iterable[tuple[float, np.ndarray]], fps: float, segment_seconds: float, fmt: str = "mpegts",
                 start_ms: int = 0) -> Iterator[Segment]:
    """Group timed frames into segments of ``segment_seconds`` and encode each."""
    pending: list[np.ndarray] = []
    index = 0
    boundary = segment_seconds
    for t, pixels in frames:
        if t >= boundary and pending:
            payload, content_type = encode_segment(pending, fps, fmt)
            yield Segment(index, start_ms + round(index * segment_seconds * 1000), payload, content_type, len(pending),
                          round(len(pending) / fps * 1000))
            index += 1
            pending = []
            boundary += segment_seconds
        pending.append(pixels)
    if pending:
        payload, content_type = encode_segment(pending, fps, fmt)
        yield Segment(index, start_ms + round(index * segment_seconds * 1000), payload, content_type, len(pending),
                      round(len(pending) / fps * 1000))
