"""Property-based fuzzing of the decode path: whatever the bytes, decode_segment returns sampled
frames of the model's size or raises DecodeError (a DLQ error type); nothing else escapes, and
no input runs past the decode time limit. Seeds are real PyAV-encoded segments and images,
mutated by truncation, bit flips, overwritten and inserted runs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framewatch.worker.contracts import IMAGE_CONTENT_TYPES, VIDEO_CONTENT_TYPES
from framewatch.worker.decode import DecodeError, DecodeLimits, DecodeRequest, decode_segment
from framewatch.worker.media import encode_image, encode_segment
from tests.integration.harness import clip
from tests.reliability.conftest import FULL

pytestmark = pytest.mark.reliability

ERROR_TYPES = {"not-media", "decode-error", "truncated", "too-many-frames", "frame-too-large", "decode-timeout"}
LIMITS = DecodeLimits(max_frames=200, max_pixels=1920 * 1080, max_decode_seconds=5.0)


def _seeds() -> list[tuple[bytes, str]]:
    frames = clip(11, violent=True, frames=12, size=48)
    seeds = [encode_segment(frames, 10.0, fmt) for fmt in ("mpegts", "mp4", "webm", "mkv", "flv")]
    seeds += [encode_image(frames[0], fmt) for fmt in ("jpeg", "png", "webp")]
    return seeds


SEEDS = _seeds()
CONTENT_TYPES = [None, *VIDEO_CONTENT_TYPES, *IMAGE_CONTENT_TYPES]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str | None]:
    payload, content_type = draw(st.sampled_from(SEEDS))
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            run = draw(st.binary(min_size=1, max_size=64))
            data[at : at + len(run)] = run
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
    # Sometimes a wrong or missing content type, as a confused producer would send.
    declared = draw(st.one_of(st.just(content_type), st.sampled_from(CONTENT_TYPES)))
    return bytes(data), declared


@settings(max_examples=5000 if FULL else 1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated(), st.booleans(), st.booleans())
def test_decode_never_fails_other_than_with_a_dlq_error(case: tuple[bytes, str | None], with_duration: bool, strict: bool) -> None:
    payload, content_type = case
    request = DecodeRequest(payload, content_type, 32, 24, segment_start_ms=0, limits=LIMITS, strict=strict,
                            segment_duration_ms=1200 if with_duration else None)
    started = time.monotonic()
    try:
        result = decode_segment(request)
    except DecodeError as exc:
        assert exc.error_type in ERROR_TYPES
        return
    finally:
        assert time.monotonic() - started < LIMITS.max_decode_seconds + 2
    assert result.decoded >= 1
    for frame in result.frames:
        assert frame.pixels.shape == (24, 32, 3) and frame.pixels.dtype == np.uint8
