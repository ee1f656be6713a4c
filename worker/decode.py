"""PyAV decoding from memory, frame sampling and resizing; runs inside the decode pool.

One call decodes one Kafka message (a segment or a still image) and returns the sampled
frames already resized to the model's input. It is a pure function of its arguments so it
can run in a worker process; every failure is a :class:`DecodeError` with a DLQ
``error-type`` (docs/contracts.md).

Frames are resized by swscale (in the same call that converts them to RGB) with the manifest's
interpolation, bilinear by default, as training resizes with PIL. The two bilinear filters are
close, not identical: on a 128→64 px synthetic frame the mean absolute difference was 0.66 of
255 (max 8), where swscale's AREA filter differed by 1.45.

Hostile input is expected. Before FFmpeg sees the bytes, MPEG-TS framing and the declared size
of still images (PNG, JPEG, WebP headers) are checked, so a 100 000 × 100 000 PNG is refused
without allocating anything. FFmpeg may only use the demuxers of the contract (no playlist or
concat demuxer that would open other files or URLs) and no protocol at all. In strict mode (the
default) any error FFmpeg reports while decoding rejects the message, because FFmpeg conceals
damage and keeps going. With ``segment-duration-ms`` a segment whose video ends more than
``truncation_tolerance_ms`` (or one frame, if longer) before its declared end is *truncated*:
its decoded frames are still returned, with :attr:`DecodeResult.truncated` saying what is
missing (containers with audio routinely declare a few milliseconds more than their video).
MPEG-TS cut inside a packet is decoded up to its last whole packet, likewise. Decode processes
can also be capped in memory (``decode.max_memory_mb``, set by the worker), which turns a
decompression bomb into an error.

Sampling is on a grid of stream time: with ``sample_fps`` = 1 the first frame at or after
every whole second is scored. A grid cell belongs to the segment in which its start lies
(``segment-start-ms``), so consecutive segments decoded in parallel never score the same
second twice and never skip one. A segment whose start lies within ``truncation_tolerance_ms``
after a cell's start also takes that cell: the segment before it declared a few ms more than its
video, so the cell's start fell past its last frame.

Hardware decoding (``decode.hwaccel``, e.g. ``cuda``) is attached the only way PyAV 14.1+
accepts it: ``av.open(..., hwaccel=HWAccel(...))`` (the codec context's ``hwaccel`` attribute is
read-only). :func:`probe_hwaccel` decodes a small clip on the device when the worker starts and
the worker refuses to start with its reason; after that, a message whose device decoder fails
to open (no device, a lost context) or to decode (a stream NVDEC cannot take) is decoded again
in software and says so in :attr:`DecodeResult.hwaccel` — a hardware failure never turns a good
message into a dead letter. Still images are always decoded in software. PyAV creates a device
context per container, so each message opens one: what that costs on a GPU is not measured.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import av.error
import av.logging
import numpy as np

from framewatch.errors import FrameWatchError
from framewatch.worker.contracts import IMAGE_CONTENT_TYPES, VIDEO_CONTENT_TYPES

if TYPE_CHECKING:
    from av.codec.hwaccel import HWAccel

    from framewatch.config import DecodeSettings
    from framewatch.engines.base import Engine

INTERPOLATION = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "POINT"}
# The demuxers the contract needs, by FFmpeg name; nothing else may probe the bytes.
ALLOWED_DEMUXERS = "mpegts,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,flv,png_pipe,jpeg_pipe,webp_pipe"
TS_PACKET = 188
TS_SYNC = 0x47


class DecodeError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str]]:  # picklable across the process pool
        return (DecodeError, (self.error_type, str(self)))


@dataclass(frozen=True)
class DecodeLimits:
    max_frames: int = 3_000
    max_pixels: int = 4096 * 2304
    max_decode_seconds: float = 20.0


@dataclass(frozen=True)
class DecodeRequest:
    payload: bytes
    content_type: str | None
    width: int
    height: int
    interpolation: str = "bilinear"
    sample_fps: float = 1.0
    keyframes_only: bool = False
    segment_start_ms: int | None = None
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    hwaccel: str | None = None
    segment_duration_ms: int | None = None
    strict: bool = True
    truncation_tolerance_ms: int = 100
    fault_hang: bool = False  # fault injection (faults.decode_hang_stream): the decode never returns
    evidence_long_side: int = 0  # > 0: each sampled frame also as a JPEG of at most this long side (evidence)
    evidence_qscale: int = 4


@dataclass
class SampledFrame:
    pts_ms: int
    pixels: np.ndarray  # uint8 H×W×3 RGB at the model's input size
    evidence: bytes | None = None  # the frame as JPEG at evidence size (DecodeRequest.evidence_long_side)


@dataclass
class DecodeResult:
    frames: list[SampledFrame]
    decoded: int  # frames decoded (sampled or not)
    seconds: float
    source_width: int = 0
    source_height: int = 0
    duration_ms: int = 0  # the span of the decoded video: last frame's time + its duration − first frame's time
    truncated: str | None = None  # what is missing when the segment ended early; its frames are still here
    hwaccel: str | None = None  # with decode.hwaccel: the device that decoded, or "software: <why>"


class HWAccelError(FrameWatchError):
    """Hardware decoding was configured but cannot work here; the message says why."""


def _format_for(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    if content_type in VIDEO_CONTENT_TYPES:
        return VIDEO_CONTENT_TYPES[content_type]
    image = IMAGE_CONTENT_TYPES.get(content_type)
    return f"{image}_pipe" if image else None


@functools.cache
def hardware_devices() -> list[str]:
    """The device types this PyAV's FFmpeg offers; asked once per process, not per message."""
    from av.codec.hwaccel import hwdevices_available

    return list(hwdevices_available())


def hwaccel_settings(device: str, *, allow_software_fallback: bool = True) -> HWAccel:
    """PyAV's HWAccel for ``device``; HWAccelError where this PyAV or FFmpeg cannot offer it."""
    try:
        from av.codec.hwaccel import HWAccel as PyAVHWAccel
    except ImportError:
        raise HWAccelError(f"PyAV {av.__version__} has no hardware decoding (av.codec.hwaccel): install av>=14.1") from None
    available = hardware_devices()
    if device not in available:
        raise HWAccelError(f"this PyAV's FFmpeg has no '{device}' device (it has: {', '.join(available) or 'none'})")
    return PyAVHWAccel(device_type=device, allow_software_fallback=allow_software_fallback)


def _open(request: DecodeRequest, ffmpeg_log: list | None = None) -> tuple[av.container.InputContainer, str | None]:
    """The container, and why the hardware decoder could not be used (None when not asked or fine).

    What FFmpeg logged during a failed hardware open ("Cannot load libcuda.so.1") is removed from
    ``ffmpeg_log``: it is the device's failure, and strict mode must not hold it against the message."""
    fmt = _format_for(request.content_type)
    options = {"format_whitelist": ALLOWED_DEMUXERS, "protocol_whitelist": "none"}
    if fmt is None:  # unknown bytes: probe generously
        options.update(probesize="5000000", analyzeduration="5000000")
    else:
        # A declared container needs no long stream analysis: the profile at saturation showed the
        # default probing at 18 % of a decode process's time on 720p segments (24 ms of ~130 ms).
        options.update(probesize="32768", analyzeduration="0", fpsprobesize="0")
    hw_failure = None
    if request.hwaccel:
        # The device context is created with the container (a CPU-only machine raised
        # PermissionError here): such a failure is the device's, not the message's, so the same
        # bytes are opened again for software decoding; bytes that are not media fail both ways.
        logged = len(ffmpeg_log) if ffmpeg_log is not None else 0
        try:
            hwaccel = hwaccel_settings(request.hwaccel)
            return av.open(io.BytesIO(request.payload), mode="r", format=fmt, options=options, hwaccel=hwaccel), None
        except Exception as exc:
            hw_failure = f"{exc.__class__.__name__}: {exc}"
            if ffmpeg_log is not None:
                del ffmpeg_log[logged:]
    try:
        return av.open(io.BytesIO(request.payload), mode="r", format=fmt, options=options), hw_failure
    except av.error.FFmpegError as exc:
        raise DecodeError("not-media", f"cannot open as {request.content_type or 'any known format'}: {exc}") from None
    except (ValueError, EOFError, OSError) as exc:
        raise DecodeError("not-media", f"cannot open: {exc}") from None


def _probe_clip(width: int = 256, height: int = 144, frames: int = 4) -> bytes:
    """A small H.264 MPEG-TS clip (made here, so the probe needs no file)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mpegts") as out:
        stream = out.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), (i * 40) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def probe_hwaccel(device: str) -> str:
    """Decode a small H.264 clip on ``device`` with no software fallback, as the worker starts.

    Returns what was verified; raises :class:`HWAccelError` with the reason otherwise, so a
    configured hardware decoder is either in use or refused at start-up, never silently absent."""
    hwaccel = hwaccel_settings(device, allow_software_fallback=False)
    try:
        clip = _probe_clip()
    except Exception as exc:  # an encoder problem, not the device's
        raise HWAccelError(f"could not make the H.264 probe clip to test '{device}' with ({exc.__class__.__name__}: {exc})") from None
    try:
        with av.open(io.BytesIO(clip), mode="r", format="mpegts", hwaccel=hwaccel) as container:
            stream = container.streams.video[0]
            decoded = sum(1 for _ in container.decode(stream))
            on_device = bool(getattr(stream.codec_context, "is_hwaccel", False))
    except Exception as exc:
        raise HWAccelError(f"cannot decode on '{device}': {exc.__class__.__name__}: {exc}") from None
    if not on_device or decoded == 0:
        raise HWAccelError(f"'{device}' opened but did not decode the probe clip on the device ({decoded} frames, is_hwaccel={on_device})")
    return f"decoded {decoded} H.264 frames on '{device}' (PyAV {av.__version__})"


def image_dimensions(payload: bytes, content_type: str | None) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG or WebP header, read without decoding; None if unknown."""
    kind = IMAGE_CONTENT_TYPES.get(content_type or "")
    try:
        if kind == "png" or payload.startswith(b"\x89PNG\r\n\x1a\n"):
            if payload[12:16] == b"IHDR":
                width, height = struct.unpack(">II", payload[16:24])
                return width, height
        elif kind == "jpeg" or payload.startswith(b"\xff\xd8"):
            return _jpeg_dimensions(payload)
        elif kind == "webp" or (payload[:4] == b"RIFF" and payload[8:12] == b"WEBP"):
            chunk = payload[12:16]
            if chunk == b"VP8X":
                return 1 + int.from_bytes(payload[24:27], "little"), 1 + int.from_bytes(payload[27:30], "little")
            if chunk == b"VP8L" and payload[20] == 0x2F:
                bits = int.from_bytes(payload[21:25], "little")
                return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
            if chunk == b"VP8 " and payload[23:26] == b"\x9d\x01\x2a":
                width, height = struct.unpack("<HH", payload[26:30])
                return width & 0x3FFF, height & 0x3FFF
    except (struct.error, IndexError):
        return None
    return None


def _jpeg_dimensions(payload: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 9 < len(payload):
        if payload[position] != 0xFF:
            return None
        marker = payload[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        length = int.from_bytes(payload[position + 2 : position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", payload[position + 5 : position + 9])
            return width, height
        position += 2 + length
    return None


def precheck(request: DecodeRequest) -> None:
    """Refuse what can be judged from the bytes alone, before FFmpeg allocates anything."""
    payload = request.payload
    if request.content_type == "video/mp2t":
        if payload[:1] != bytes([TS_SYNC]):
            raise DecodeError("not-media", "not MPEG-TS: the first byte is not the 0x47 sync byte")
        whole = len(payload) - len(payload) % TS_PACKET
        if payload[:whole:TS_PACKET].count(TS_SYNC) != whole // TS_PACKET:
            raise DecodeError("decode-error", "MPEG-TS packets without their sync byte: the segment is corrupt")
    if request.content_type in IMAGE_CONTENT_TYPES or request.content_type is None:
        size = image_dimensions(payload, request.content_type)
        if size is not None and size[0] * size[1] > request.limits.max_pixels:
            raise DecodeError("frame-too-large", f"image declares {size[0]}×{size[1]}, over max_pixels {request.limits.max_pixels}")


# Errors that say nothing about the device: the same bytes fail in software too.
NOT_THE_DEVICE = frozenset({"not-media", "frame-too-large", "too-many-frames"})


def decode_segment(request: DecodeRequest) -> DecodeResult:
    """Decode one message. Every failure is a :class:`DecodeError`: anything else raised inside
    FFmpeg or PyAV (MemoryError under the process's memory cap included) becomes one, so a
    decode process never hands the worker an exception it does not know.

    With ``hwaccel``, a message that fails on the device is decoded again in software before it
    counts as failed: NVDEC refuses streams it lacks the capabilities for (H.264 High 10, 4:2:2,
    frames under its minimum size) and FFmpeg logs that as an error, which strict mode would
    otherwise hold against good bytes. Still images never use the device."""
    if request.hwaccel and request.content_type in IMAGE_CONTENT_TYPES:
        request = replace(request, hwaccel=None)
    if request.hwaccel:
        try:
            return _decode_guarded(request)
        except DecodeError as exc:
            if exc.error_type in NOT_THE_DEVICE:
                raise
            result = _decode_guarded(replace(request, hwaccel=None))
            result.hwaccel = f"software: on {request.hwaccel}: {exc}"
            return result
    return _decode_guarded(request)


def _decode_guarded(request: DecodeRequest) -> DecodeResult:
    try:
        return _decode_checked(request)
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError("decode-error", "out of memory while decoding (decode.max_memory_mb)") from None
    except Exception as exc:
        raise DecodeError("decode-error", f"unexpected {exc.__class__.__name__} while decoding: {exc}") from None


def _decode_checked(request: DecodeRequest) -> DecodeResult:
    if request.fault_hang:
        while True:  # the reliability suite's stuck decoder: only SIGKILL ends it
            time.sleep(1.0)
    started = time.monotonic()
    limits = request.limits
    precheck(request)
    cut_packets = ""
    if request.content_type == "video/mp2t" and len(request.payload) % TS_PACKET:
        # Decode what is whole; the missing tail is reported, not the good frames discarded.
        cut_packets = f"MPEG-TS of {len(request.payload)} bytes ends inside a {TS_PACKET}-byte packet"
        request = replace(request, payload=request.payload[: len(request.payload) - len(request.payload) % TS_PACKET])
    # FFmpeg reports damage through its log and conceals it; strict mode listens. Repeats are not
    # coalesced, or an error would be held back and reported with the next message.
    av.logging.set_level(av.logging.WARNING)
    av.logging.set_skip_repeated(False)
    with av.logging.Capture(local=False) as ffmpeg_errors:
        result = _decode_segment(request, started, limits, ffmpeg_errors)
    errors = [f"{name}: {message.strip()}" for level, name, message in ffmpeg_errors if level <= av.logging.ERROR]
    if errors and request.strict and not (cut_packets or result.truncated):
        raise DecodeError("decode-error", f"FFmpeg reported {len(errors)} error(s), first: {errors[0]}")
    if cut_packets:
        result.truncated = cut_packets if result.truncated is None else f"{cut_packets}; {result.truncated}"
    return result


def _decode_segment(request: DecodeRequest, started: float, limits: DecodeLimits, ffmpeg_log: list | None = None) -> DecodeResult:
    container, hw_failure = _open(request, ffmpeg_log)
    try:
        if not container.streams.video:
            raise DecodeError("not-media", "no video stream in the container")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:  # found by tests/reliability/test_fuzz_decode.py: a damaged mp4 track without a codec
            raise DecodeError("not-media", "the video stream has no codec FFmpeg can open")
        if ctx.width and ctx.height and ctx.width * ctx.height > limits.max_pixels:
            raise DecodeError("frame-too-large", f"declared {ctx.width}×{ctx.height} exceeds max_pixels {limits.max_pixels}")
        if request.keyframes_only:
            ctx.skip_frame = "NONKEY"  # the decoder skips non-key frames entirely
        ctx.thread_type = "AUTO"
        ctx.thread_count = 1  # parallelism comes from the pool, one process per core
        result = _decode_frames(container, stream, request, started)
        if request.hwaccel:
            if hw_failure:
                result.hwaccel = f"software: {hw_failure}"
            elif not getattr(ctx, "is_hwaccel", False):
                result.hwaccel = f"software: the {request.hwaccel} decoder does not take {ctx.name}"
            else:
                result.hwaccel = request.hwaccel
        return result
    except DecodeError:
        raise
    except (av.error.FFmpegError, ValueError, EOFError, OSError) as exc:
        raise DecodeError("decode-error", f"{exc.__class__.__name__}: {exc}") from None
    finally:
        container.close()


class EvidenceEncoder:
    """Sampled frames as JPEG at evidence size, in the decode process, while the frame is at hand.

    Why every sampled frame, not only the alerting ones: the score is known only after inference,
    when the decoded frame is gone; decoding the segment again for an alert would cost a whole GOP
    (tens of ms) and the payload would have to be kept. Measured on 2 cores: scaling a 1280×720
    frame to 480×270 and encoding it takes 1.4 ms (320×180: 0.75 ms), against the ~80 ms of CPU a
    sampled frame costs end to end (docs/review.md, "Cost")."""

    def __init__(self, long_side: int, qscale: int) -> None:
        self.long_side = long_side
        self.qscale = qscale
        self.context: Any = None

    def size(self, width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, self.long_side / max(width, height))
        # Even sizes: 4:2:0 JPEG halves the chroma planes; capped so an odd long_side is never exceeded.
        cap = max(2, self.long_side // 2 * 2)
        return min(cap, max(2, round(width * scale / 2) * 2)), min(cap, max(2, round(height * scale / 2) * 2))

    def encode(self, frame: av.VideoFrame) -> bytes:
        width, height = self.size(frame.width, frame.height)
        if self.context is None or (self.context.width, self.context.height) != (width, height):
            context: Any = av.CodecContext.create("mjpeg", "w")
            context.width, context.height, context.pix_fmt = width, height, "yuvj420p"
            context.time_base = Fraction(1, 25)
            # A fixed quantizer (PyAV does not expose a frame's quality, which -q:v sets): bounded
            # below and above by the same value, with a bit rate that never constrains it.
            context.bit_rate = 200_000_000
            context.options = {"qmin": str(self.qscale), "qmax": str(self.qscale)}
            self.context = context
        small = frame.reformat(width=width, height=height, format="yuvj420p", interpolation="BILINEAR")
        return b"".join(bytes(p) for p in self.context.encode(small))


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counterclockwise quarter turns that show the frame upright (its display matrix; PyAV's
    ``rotation`` is counterclockwise degrees; 0 where PyAV does not say)."""
    return round((getattr(frame, "rotation", 0) or 0) / 90) % 4


def _upright(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame as it is meant to be seen: a display matrix (a phone's portrait video, stored
    landscape) is applied as FFmpeg's autorotate does, so the model and the evidence see the
    picture upright, not sideways. PyAV's ``rotation`` is counterclockwise degrees; checked
    against ``ffmpeg -i`` (autorotate) on a ``rotate=90`` MP4. Costs an RGB copy, on rotated
    streams only."""
    turns = quarter_turns(frame)
    if turns == 0:
        return frame
    turned: np.ndarray[Any, np.dtype[np.uint8]] = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), turns), dtype=np.uint8)
    upright = av.VideoFrame.from_ndarray(turned, format="rgb24")
    upright.pts, upright.time_base = frame.pts, frame.time_base
    return upright


def _decode_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream, request: DecodeRequest, started: float) -> DecodeResult:
    limits = request.limits
    period_ms = 1000.0 / request.sample_fps
    is_image = request.content_type in IMAGE_CONTENT_TYPES or (container.format.name or "").endswith("_pipe")
    interpolation = INTERPOLATION.get(request.interpolation, "BILINEAR")
    frames: list[SampledFrame] = []
    decoded = 0
    first_time: float | None = None
    first_seconds = 0.0
    segment_start: float = float(request.segment_start_ms) if request.segment_start_ms is not None else 0.0
    have_start = request.segment_start_ms is not None
    last_cell: int | None = None
    width = height = 0
    grid = not (is_image or request.keyframes_only)
    # With a declared duration the last grid cell of the segment is known: decoding stops once it
    # is sampled, instead of decoding the rest of the GOP for nothing (about half of a 2-s segment
    # at 1 frame/s). A segment that ends before that cell is truncated.
    final_cell: int | None = None
    complete = False
    frame_ms = 1000.0 / float(stream.average_rate) if stream.average_rate else 0.0
    first_pts_ms = last_pts_ms = pts_ms = 0
    # Key frames only: the decoder never sees most frames, so the video's end (for the duration
    # the scorer places the next message with, and for truncation) comes from the packets.
    keyframes = request.keyframes_only and not is_image
    packets_end_s: list[float] = []
    evidence = EvidenceEncoder(request.evidence_long_side, request.evidence_qscale) if request.evidence_long_side > 0 else None

    def key_frames() -> Any:
        for packet in container.demux(stream):
            if packet.pts is not None and packet.time_base is not None:
                packets_end_s.append(float((packet.pts + (packet.duration or 0)) * packet.time_base))
            yield from packet.decode()

    for frame in key_frames() if keyframes else container.decode(stream):
        decoded += 1
        if decoded > limits.max_frames:
            raise DecodeError("too-many-frames", f"more than max_frames={limits.max_frames} frames in one message")
        if time.monotonic() - started > limits.max_decode_seconds:
            raise DecodeError("decode-timeout", f"decoding took over max_decode_seconds={limits.max_decode_seconds}")
        width, height = frame.width, frame.height
        if width * height > limits.max_pixels:
            raise DecodeError("frame-too-large", f"frame {width}×{height} exceeds max_pixels {limits.max_pixels}")
        if frame.is_corrupt:
            raise DecodeError("decode-error", f"frame {decoded} is corrupt")
        seconds = frame.time if frame.time is not None else (decoded - 1) / float(stream.average_rate or 25)
        if first_time is None:
            first_time = seconds
            if not have_start:
                segment_start = seconds * 1000.0
            if grid and request.segment_duration_ms is not None:
                final_cell = math.ceil((segment_start + request.segment_duration_ms - 0.5) / period_ms) - 1
            first_seconds = seconds
        pts_ms = round(segment_start + (seconds - first_time) * 1000) if have_start else round(seconds * 1000)
        if decoded == 1:
            first_pts_ms = last_pts_ms = pts_ms
        elif frame_ms == 0.0 and pts_ms > last_pts_ms:
            frame_ms = float(pts_ms - last_pts_ms)  # no declared rate: the first interval stands for a frame
        last_pts_ms = max(last_pts_ms, pts_ms)
        cell = int(pts_ms // period_ms)
        if grid or keyframes:
            # The first frame of each grid cell; a cell that began before this segment is the previous
            # one's, unless it began within the truncation tolerance: a segment declared a few ms longer
            # than its video (audio) leaves the cell at its end to the next segment. Key frames are
            # capped the same way: an all-intra source gives sample_fps frames a second, not 30.
            keep = cell != last_cell and cell * period_ms >= segment_start - max(0.5, request.truncation_tolerance_ms)
            last_cell = cell
        else:
            keep = True
        if keep:
            frame = _upright(frame)
            rgb = frame.reformat(width=request.width, height=request.height, format="rgb24", interpolation=interpolation)
            jpeg = evidence.encode(frame) if evidence is not None else None
            frames.append(SampledFrame(pts_ms, rgb.to_ndarray(), jpeg))
            if final_cell is not None and cell >= final_cell:
                complete = True
                break
    if decoded == 0:
        raise DecodeError("decode-error", "no frame could be decoded")
    video_end_ms = last_pts_ms + frame_ms
    if keyframes and packets_end_s and first_time is not None:
        end_s = max(packets_end_s)
        video_end_ms = max(video_end_ms, segment_start + (end_s - first_seconds) * 1000 if have_start else end_s * 1000)
    truncated = None
    if ((final_cell is not None and not complete) or keyframes) and request.segment_duration_ms is not None:
        declared_end = segment_start + request.segment_duration_ms
        # Complete when the video reaches its declared end within a frame or the tolerance: a
        # container with audio declares its audio's end, a few milliseconds past the last frame.
        if video_end_ms < declared_end - max(frame_ms, request.truncation_tolerance_ms):
            truncated = (f"video ends at {video_end_ms:.0f} ms, {declared_end - video_end_ms:.0f} ms before the declared "
                         f"{request.segment_duration_ms} ms; {len(frames)} frame(s) decoded, the rest is missing")
    if not frames and truncated:
        raise DecodeError("truncated", truncated)
    duration = round(video_end_ms - first_pts_ms) if not is_image else 0
    if request.segment_duration_ms is not None and not truncated and not is_image:
        duration = max(duration, request.segment_duration_ms)
    return DecodeResult(frames, decoded, time.monotonic() - started, width, height, duration_ms=duration, truncated=truncated)


def decode_request(d: DecodeSettings, engine: Engine, payload: bytes, content_type: str | None,
                   segment_start_ms: int | None, segment_duration_ms: int | None, keyframes_only: bool | None = None) -> DecodeRequest:
    """What the decode pool is asked for one message: the engine's input size and the resize
    filter training used (model.json preprocessing.resize), the decode settings and limits, and
    the sampling (``keyframes_only``: the adaptive policy's decision for this message; by default
    what ``decode.policy`` says). The benchmarks build their requests here too."""
    height, width = engine.input_size
    return DecodeRequest(
        payload=payload, content_type=content_type, width=width, height=height,
        interpolation=getattr(engine, "interpolation", "bilinear"), sample_fps=d.sample_fps,
        # Undecided, an adaptive stream is a calm one: key frames (the worker decides per message).
        keyframes_only=(d.policy in ("keyframes", "adaptive")) if keyframes_only is None else keyframes_only,
        segment_start_ms=segment_start_ms, limits=DecodeLimits(d.max_frames, d.max_pixels, d.max_decode_seconds), hwaccel=d.hwaccel,
        segment_duration_ms=segment_duration_ms, strict=d.strict, truncation_tolerance_ms=d.truncation_tolerance_ms,
    )
