"""Checks that run on the bytes before FFmpeg: image headers and MPEG-TS framing."""

from __future__ import annotations

import numpy as np
import pytest

from framewatch.config import mask_url
from framewatch.worker.decode import DecodeError, DecodeLimits, DecodeRequest, image_dimensions, precheck
from framewatch.worker.media import encode_image, encode_segment


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_image_headers_give_the_real_size(fmt: str) -> None:
    pixels = np.zeros((48, 80, 3), np.uint8)
    payload, content_type = encode_image(pixels, fmt)
    assert image_dimensions(payload, content_type) == (80, 48)
    assert image_dimensions(payload, None) == (80, 48)  # recognised by signature when undeclared


def test_images_over_the_pixel_limit_are_refused_before_decoding() -> None:
    payload, content_type = encode_image(np.zeros((48, 80, 3), np.uint8), "png")
    precheck(DecodeRequest(payload, content_type, 8, 8, limits=DecodeLimits(max_pixels=80 * 48)))
    with pytest.raises(DecodeError) as raised:
        precheck(DecodeRequest(payload, content_type, 8, 8, limits=DecodeLimits(max_pixels=80 * 48 - 1)))
    assert raised.value.error_type == "frame-too-large"


def test_mpegts_framing() -> None:
    payload, content_type = encode_segment([np.zeros((32, 32, 3), np.uint8)] * 4, 10.0, "mpegts")
    precheck(DecodeRequest(payload, content_type, 8, 8))
    cases = {"not-media": b"\x00" + payload[1:], "decode-error": payload[:188] + b"\x00" + payload[189:]}
    for error_type, damaged in cases.items():
        with pytest.raises(DecodeError) as raised:
            precheck(DecodeRequest(damaged, content_type, 8, 8))
        assert raised.value.error_type == error_type
    precheck(DecodeRequest(payload[:-5], content_type, 8, 8))  # cut inside a packet: decoded up to it (below)


def test_a_segment_cut_short_keeps_its_decoded_frames() -> None:
    from framewatch.worker.decode import decode_segment

    frames = [np.full((32, 32, 3), 6 * i, np.uint8) for i in range(40)]
    payload, content_type = encode_segment(frames, 10.0, "mpegts")
    whole = decode_segment(DecodeRequest(payload, content_type, 8, 8, segment_start_ms=0, segment_duration_ms=4000))
    assert whole.truncated is None and [f.pts_ms for f in whole.frames] == [0, 1000, 2000, 3000]
    cut = decode_segment(DecodeRequest(payload[: len(payload) // 2 - 7], content_type, 8, 8, segment_start_ms=0, segment_duration_ms=4000))
    assert cut.truncated and cut.frames and [f.pts_ms for f in cut.frames] == [0, 1000, 2000, 3000][: len(cut.frames)]


def test_passwords_in_urls_are_masked() -> None:
    assert mask_url("rediss://fw:secret@redis:6380/0") == "rediss://fw:***@redis:6380/0"
    assert mask_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_the_decoder_resizes_with_the_filter_the_manifest_names() -> None:
    """model.json preprocessing.resize reaches the decode request through the engine (no getattr default)."""
    from types import SimpleNamespace

    from framewatch.config import DecodeSettings
    from framewatch.worker.decode import decode_request

    engine = SimpleNamespace(input_size=(48, 64), interpolation="bicubic")
    request = decode_request(DecodeSettings(), engine, b"x", "video/mp2t", 0, 2000)  # type: ignore[arg-type]
    assert request.interpolation == "bicubic" and (request.height, request.width) == (48, 64)
