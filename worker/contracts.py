"""Wire contracts of the worker, the single code home of docs/contracts.md.

Three parts live here: the Kafka input message, the dead-letter message, and the Redis
keys and fields that moderation tools read. The model artifact contract lives in
:mod:`framewatch.engines.manifest`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# --- Kafka input (topic names are configuration: framewatch.config KafkaSettings) --------

HEADER_CONTENT_TYPE = "content-type"
HEADER_STREAM_ID = "stream-id"
HEADER_SEGMENT_START_MS = "segment-start-ms"
HEADER_CAPTURED_AT_MS = "captured-at-ms"
# Declared length of the segment in stream time; when present, a segment that decodes shorter
# is rejected as truncated (MPEG-TS and WebM cut short otherwise decode "fine", just shorter).
HEADER_SEGMENT_DURATION_MS = "segment-duration-ms"
# Set by `framewatch produce`, read by benchmarks for end-to-end latency; optional.
HEADER_PRODUCED_AT_MS = "produced-at-ms"
# Names the broadcast a segment belongs to; a new value starts a new broadcast of the stream.
HEADER_BROADCAST_ID = "broadcast-id"
MAX_BROADCAST_ID_BYTES = 128
# The stream's metadata text (optional). Never scored — the deployed model is image-only — but kept
# with the evidence of an alert, where it makes a moderator's decision an image–text training pair.
HEADER_STREAM_TITLE = "stream-title"
HEADER_STREAM_CATEGORY = "stream-category"
HEADER_CAPTION = "caption"  # the whole text at once; wins over title and category
METADATA_HEADERS = (HEADER_STREAM_TITLE, HEADER_STREAM_CATEGORY, HEADER_CAPTION)
MAX_METADATA_BYTES = 1024

VIDEO_CONTENT_TYPES: dict[str, str] = {
    "video/mp2t": "mpegts",
    "video/mp4": "mp4",
    "video/iso.segment": "mp4",
    "video/x-matroska": "matroska",
    "video/webm": "matroska",
    "video/x-flv": "flv",
}
IMAGE_CONTENT_TYPES: dict[str, str] = {
    "image/jpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
}
SUPPORTED_CONTENT_TYPES = frozenset(VIDEO_CONTENT_TYPES) | frozenset(IMAGE_CONTENT_TYPES)

MAX_STREAM_ID_BYTES = 256

Headers = Sequence[tuple[str, bytes]]


class ContractError(ValueError):
    """A message breaks the input contract. ``error_type`` goes into the DLQ headers."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class SegmentMessage:
    """One Kafka input message, validated: the unit of delivery, decoding and commit."""

    topic: str
    partition: int
    offset: int
    stream_id: str
    payload: bytes
    content_type: str | None  # None: probe the bytes
    segment_start_ms: int | None
    captured_at_ms: int | None
    produced_at_ms: int | None
    segment_duration_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()  # as received: dead-letter copies carry them unchanged
    key: bytes | None = None  # as received
    record_ts_ms: int = -1  # the Kafka record timestamp (-1: none)
    broadcast_id: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # (header, text) of the metadata headers present

    @property
    def timed(self) -> bool:
        """Whether the producer gave the stream time (``segment-start-ms``)."""
        return self.segment_start_ms is not None

    @property
    def time_hint_ms(self) -> int | None:
        """Where an untimed message starts at the earliest: ``captured-at-ms``, else the record timestamp."""
        if self.captured_at_ms is not None:
            return self.captured_at_ms
        return self.record_ts_ms if self.record_ts_ms >= 0 else None

    @property
    def key_mismatch(self) -> bool:
        """A ``stream-id`` header that differs from the key: the stream's messages may spread over
        partitions, which Kafka does not order against each other."""
        return self.key is not None and self.key != self.stream_id.encode("utf-8")


def header_map(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    # The last value wins, as Kafka clients do for repeated header keys.
    return {key.lower(): (value or b"") for key, value in (headers or [])}


def _int_header(headers: dict[str, bytes], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None or raw == b"":
        return None
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ContractError("bad-header", f"header {name} must be an integer, got {raw[:40]!r}") from None


def _stream_id(raw: bytes | None) -> str:
    if not raw:
        raise ContractError("missing-stream-id", "message has neither a key nor a stream-id header")
    if len(raw) > MAX_STREAM_ID_BYTES:
        raise ContractError("bad-stream-id", f"stream id is {len(raw)} bytes, limit {MAX_STREAM_ID_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ContractError("bad-stream-id", f"stream id is not valid UTF-8: {raw[:40]!r}") from None
    if any(ch in text for ch in "{}") or not text.isprintable():
        raise ContractError("bad-stream-id", f"stream id holds braces or control characters: {text[:40]!r}")
    return text


def _broadcast_id(raw: bytes | None) -> str | None:
    if raw is None or raw == b"":
        return None
    if len(raw) > MAX_BROADCAST_ID_BYTES:
        raise ContractError("bad-header", f"header {HEADER_BROADCAST_ID} is {len(raw)} bytes, limit {MAX_BROADCAST_ID_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ContractError("bad-header", f"header {HEADER_BROADCAST_ID} is not valid UTF-8: {raw[:40]!r}") from None
    if not text.isprintable():
        raise ContractError("bad-header", f"header {HEADER_BROADCAST_ID} holds control characters: {text[:40]!r}")
    return text


def _metadata(headers: dict[str, bytes]) -> tuple[tuple[str, str], ...]:
    """The metadata headers present, as text. Invalid metadata is dropped, never fatal: it is not
    scored, and a segment is not lost for a title with a stray byte (it is cut to the limit and
    decoded with replacement characters; control characters become spaces)."""
    out = []
    for name in METADATA_HEADERS:
        raw = headers.get(name)
        if not raw:
            continue
        # Decoded, then cut to the limit in UTF-8 at a character boundary: cutting the bytes first
        # left half a character (a trailing U+FFFD), and replacement characters (3 bytes each)
        # could make a "1 KiB" header 3 KiB.
        text = raw[:MAX_METADATA_BYTES * 2].decode("utf-8", "replace").encode()[:MAX_METADATA_BYTES].decode("utf-8", "ignore")
        text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
        if text:
            out.append((name, text))
    return tuple(out)


def caption(metadata: Iterable[tuple[str, str]] | dict[str, str]) -> str:
    """The training text of a stream's metadata: ``caption`` if given, else "title. category"."""
    fields = dict(metadata)
    if fields.get(HEADER_CAPTION):
        return fields[HEADER_CAPTION]
    return ". ".join(fields[k] for k in (HEADER_STREAM_TITLE, HEADER_STREAM_CATEGORY) if fields.get(k))


def parse_message(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None, max_bytes: int, record_ts_ms: int | None = None,
) -> SegmentMessage:
    """Validate a raw Kafka record against the input contract (no decoding yet)."""
    raw_headers = tuple((k, v or b"") for k, v in (headers or []))
    hdrs = header_map(raw_headers)
    stream_id = _stream_id(hdrs.get(HEADER_STREAM_ID) or key)
    payload = value or b""
    if not payload:
        raise ContractError("empty-message", "message value is empty")
    if len(payload) > max_bytes:
        raise ContractError("too-large", f"message is {len(payload)} bytes, limit {max_bytes}")
    content_type: str | None = None
    raw_type = hdrs.get(HEADER_CONTENT_TYPE)
    if raw_type:
        content_type = raw_type.decode("latin-1").split(";")[0].strip().lower()
        if content_type not in SUPPORTED_CONTENT_TYPES:
            raise ContractError("unsupported-content-type", f"content-type {content_type!r} is not supported")
    return SegmentMessage(
        topic=topic, partition=partition, offset=offset, stream_id=stream_id, payload=payload,
        content_type=content_type,
        segment_start_ms=_int_header(hdrs, HEADER_SEGMENT_START_MS),
        captured_at_ms=_int_header(hdrs, HEADER_CAPTURED_AT_MS),
        produced_at_ms=_int_header(hdrs, HEADER_PRODUCED_AT_MS),
        segment_duration_ms=_int_header(hdrs, HEADER_SEGMENT_DURATION_MS),
        headers=raw_headers, key=key,
        record_ts_ms=record_ts_ms if record_ts_ms is not None and record_ts_ms >= 0 else -1,
        broadcast_id=_broadcast_id(hdrs.get(HEADER_BROADCAST_ID)),
        metadata=_metadata(hdrs),
    )


def segment_headers(
    content_type: str, segment_start_ms: int | None = None, captured_at_ms: int | None = None,
    produced_at_ms: int | None = None, stream_id: str | None = None, segment_duration_ms: int | None = None,
    broadcast_id: str | None = None, metadata: dict[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """Headers a producer attaches to one segment (``metadata``: stream-title, stream-category, caption)."""
    headers = [(HEADER_CONTENT_TYPE, content_type.encode())]
    for name, number in (
        (HEADER_SEGMENT_START_MS, segment_start_ms),
        (HEADER_CAPTURED_AT_MS, captured_at_ms),
        (HEADER_PRODUCED_AT_MS, produced_at_ms),
        (HEADER_SEGMENT_DURATION_MS, segment_duration_ms),
    ):
        if number is not None:
            headers.append((name, str(int(number)).encode()))
    if stream_id is not None:
        headers.append((HEADER_STREAM_ID, stream_id.encode()))
    if broadcast_id is not None:
        headers.append((HEADER_BROADCAST_ID, broadcast_id.encode()))
    for name, text in (metadata or {}).items():
        if name not in METADATA_HEADERS:
            raise ValueError(f"{name!r} is not a metadata header ({', '.join(METADATA_HEADERS)})")
        headers.append((name, text.encode("utf-8")))
    return headers


# --- Dead-letter topic -------------------------------------------------------------------

DLQ_ERROR_TYPE = "error-type"
DLQ_ERROR_MESSAGE = "error-message"
DLQ_SOURCE_TOPIC = "source-topic"
DLQ_SOURCE_PARTITION = "source-partition"
DLQ_SOURCE_OFFSET = "source-offset"
MAX_ERROR_MESSAGE_BYTES = 1024
# Set on a dead letter that was too large for the DLQ and is written trimmed (the envelope).
DLQ_TRIMMED = "dlq-trimmed"
DLQ_ORIGINAL_SIZE = "original-size"
DLQ_ORIGINAL_SHA256 = "original-sha256"
# error-type values raised outside parse_message/decode (the others are named where they arise).
ERROR_UNREADABLE_RECORD = "unreadable-record"
ERROR_REDIS_REJECTED = "redis-rejected"
ERROR_DECODER_CRASH = "decoder-crash"
ERROR_DECODE_TIMEOUT = "decode-timeout"


def dlq_headers(
    error_type: str, error_message: str, source_topic: str, source_partition: int, source_offset: int,
    original_headers: Iterable[tuple[str, bytes | None]] | None = None,
) -> list[tuple[str, bytes]]:
    """The original headers (those the DLQ does not own) followed by the error headers."""
    owned = {DLQ_ERROR_TYPE, DLQ_ERROR_MESSAGE, DLQ_SOURCE_TOPIC, DLQ_SOURCE_PARTITION, DLQ_SOURCE_OFFSET}
    kept = [(k, v or b"") for k, v in (original_headers or []) if k.lower() not in owned]
    return [
        *kept,
        (DLQ_ERROR_TYPE, error_type.encode()),
        (DLQ_ERROR_MESSAGE, error_message.encode("utf-8", "replace")[:MAX_ERROR_MESSAGE_BYTES]),
        (DLQ_SOURCE_TOPIC, source_topic.encode()),
        (DLQ_SOURCE_PARTITION, str(source_partition).encode()),
        (DLQ_SOURCE_OFFSET, str(source_offset).encode()),
    ]


# --- Redis keys --------------------------------------------------------------------------

DEFAULT_PREFIX = "framewatch"

# Fields of the per-stream hash.
F_SCORE = "score"
F_EMA = "ema"
F_MAX_RECENT = "max_recent"
F_FRAMES = "frames"
F_PTS_MS = "pts_ms"
F_UPDATED_AT_MS = "updated_at_ms"
F_MODEL = "model"
F_ALERT = "alert"
F_PARTITION = "partition"
F_OFFSET = "offset"
# The stream-time model and the replay guard (docs/contracts.md, "Stream time").
F_BROADCAST = "broadcast"
F_BROADCAST_SEQ = "broadcast_seq"
F_BROADCAST_FROM_HEADER = "broadcast_from_header"
F_POSITIONS = "positions"  # JSON {partition: [offset, frame index, record timestamp]} of the last frames written
F_MESSAGE = "message"  # "partition:offset:record timestamp" of the latest message
F_MESSAGE_BASE_MS = "message_base_ms"  # the stream time that message starts at
F_END_MS = "end_ms"  # the earliest start of the next untimed message
F_LAST_PARTITION = "last_partition"
F_METADATA = "metadata"  # JSON {header: text} of the stream's latest metadata headers (evidence on; never scored)
STREAM_HASH_FIELDS = (F_SCORE, F_EMA, F_MAX_RECENT, F_FRAMES, F_PTS_MS, F_UPDATED_AT_MS, F_MODEL, F_ALERT, F_PARTITION, F_OFFSET,
                      F_BROADCAST, F_BROADCAST_SEQ, F_BROADCAST_FROM_HEADER, F_POSITIONS, F_MESSAGE, F_MESSAGE_BASE_MS, F_END_MS,
                      F_LAST_PARTITION, F_METADATA)

# Fields of one history entry and of one alert event.
H_SCORE = "score"
H_PTS_MS = "pts_ms"
H_EMA = "ema"
H_OFFSET = "offset"
H_PARTITION = "partition"
H_BROADCAST = "broadcast"
H_LATE = "late"  # 1 on a frame earlier than the stream's latest (it did not move the EMA)
A_STREAM = "stream"
A_EVENT = "event"  # "raise" | "clear"
A_REASON = "reason"
A_EMA = "ema"
A_PTS_MS = "pts_ms"
A_AT_MS = "at_ms"
A_MODEL = "model"
A_BROADCAST = "broadcast"
A_EVENT_ID = "event_id"
# On a raise: the evidence ids (comma-separated; the raising frame first, then the best frame of
# the window), written to the evidence store before the event; or why there is none.
A_EVIDENCE = "evidence"
A_EVIDENCE_ERROR = "evidence_error"
A_THRESHOLD = "threshold"  # scoring.alert_on when the event was written: why it fired
A_SCORE = "score"  # the frame's own score
ALERT_RAISE = "raise"
ALERT_CLEAR = "clear"

# Fields of a near-miss entry (framewatch:nearmiss): a frame whose EMA came within
# evidence.near_miss_margin of alert_on without crossing it, sampled for review.
N_STREAM, N_BROADCAST, N_PTS_MS, N_SCORE, N_EMA, N_THRESHOLD, N_MODEL, N_AT_MS, N_EVIDENCE, N_EVENT_ID = (
    "stream", "broadcast", "pts_ms", "score", "ema", "threshold", "model", "at_ms", "evidence", "event_id")

# Fields of a feedback entry (framewatch:feedback), written by the dashboard.
FB_ITEM = "item"  # the alert's or near miss's event_id
FB_KIND = "kind"  # "alert" | "near-miss"
FB_LABEL = "label"  # one of FEEDBACK_LABELS
FB_REVIEWER = "reviewer"
FB_AT_MS = "at_ms"
FB_NOTE = "note"
FB_STREAM = "stream"
FB_EVIDENCE = "evidence"
FB_PREVIOUS = "previous"  # the reviewer's label before this decision ("" for the first)
LABEL_VIOLENT = "violent"
LABEL_NOT_VIOLENT = "not-violent"
LABEL_UNSURE = "unsure"
FEEDBACK_LABELS = (LABEL_VIOLENT, LABEL_NOT_VIOLENT, LABEL_UNSURE)
MAX_NOTE_CHARS = 500


@dataclass(frozen=True)
class RedisKeys:
    """Key names for one prefix. The stream id sits in a hash tag so one stream's keys share a slot."""

    prefix: str = DEFAULT_PREFIX

    def stream(self, stream_id: str) -> str:
        return f"{self.prefix}:stream:{{{stream_id}}}"

    def history(self, stream_id: str) -> str:
        return f"{self.prefix}:history:{{{stream_id}}}"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}:alerts"

    @property
    def alerts_channel(self) -> str:
        return f"{self.prefix}:alerts"

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"

    @property
    def active_seen(self) -> str:
        """Stream ids scored by the wall clock (epoch ms) of their last write: the sweep's index."""
        return f"{self.prefix}:active:seen"

    @property
    def nearmiss(self) -> str:
        return f"{self.prefix}:nearmiss"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}:feedback"

    @property
    def decisions(self) -> str:
        """Hash: item event_id -> JSON {reviewer: label}, the current decisions (the feedback stream is the history)."""
        return f"{self.prefix}:decisions"

    def webhook_cursor(self, name: str) -> str:
        """String: the last alerts entry id `framewatch webhook --name NAME` has dealt with."""
        return f"{self.prefix}:webhook:{name}:cursor"

    def webhook_failed(self, name: str) -> str:
        """Redis stream: events that sender gave up on (`id`, `status`, `url`, `event` as JSON)."""
        return f"{self.prefix}:webhook:{name}:failed"

    @property
    def last_export(self) -> str:
        """String (JSON): the last feedback entry ``feedback export`` took, and when."""
        return f"{self.prefix}:feedback:last-export"
