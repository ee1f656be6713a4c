from __future__ import annotations

import pytest

from framewatch.worker import contracts
from framewatch.worker.contracts import ContractError, RedisKeys, parse_message


def _slot(key: str) -> str:
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


def test_redis_keys_are_the_documented_ones() -> None:
    keys = RedisKeys()
    assert keys.stream("cam-1") == "framewatch:stream:{cam-1}"
    assert keys.history("cam-1") == "framewatch:history:{cam-1}"
    assert keys.alerts == "framewatch:alerts"
    assert keys.active == "framewatch:active"
    # One stream's keys hash to the same Redis Cluster slot.
    assert _slot(keys.stream("cam-1")) == _slot(keys.history("cam-1")) == "cam-1"
    assert RedisKeys("other").stream("x") == "other:stream:{x}"


def test_parse_message_reads_headers_and_key() -> None:
    headers = [("content-type", b"video/mp2t"), ("segment-start-ms", b"4000"), ("captured-at-ms", b"1700000000000")]
    msg = parse_message("t", 2, 17, b"cam-1", b"data", headers, max_bytes=100)
    assert (msg.stream_id, msg.partition, msg.offset) == ("cam-1", 2, 17)
    assert msg.content_type == "video/mp2t" and msg.segment_start_ms == 4000 and msg.captured_at_ms == 1700000000000


def test_stream_id_header_overrides_key() -> None:
    msg = parse_message("t", 0, 0, b"key-id", b"x", [("stream-id", b"header-id")], max_bytes=10)
    assert msg.stream_id == "header-id"


def test_missing_content_type_is_probed_later() -> None:
    assert parse_message("t", 0, 0, b"k", b"x", [], max_bytes=10).content_type is None


@pytest.mark.parametrize(
    ("key", "value", "headers", "error_type"),
    [
        (b"\xff\xfe", b"x", [], "bad-stream-id"),
        (None, b"x", [], "missing-stream-id"),
        (b"a{b}", b"x", [], "bad-stream-id"),
        (b"k", b"", [], "empty-message"),
        (b"k", b"x" * 11, [], "too-large"),
        (b"k", b"x", [("content-type", b"application/zip")], "unsupported-content-type"),
        (b"k", b"x", [("segment-start-ms", b"soon")], "bad-header"),
    ],
)
def test_contract_violations_have_error_types(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], error_type: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_message("t", 0, 0, key, value, headers, max_bytes=10)
    assert info.value.error_type == error_type


def test_dlq_headers_carry_the_error_and_source() -> None:
    headers = dict(contracts.dlq_headers("decode-error", "bad bytes", "framewatch.segments", 3, 99, [("content-type", b"video/mp4")]))
    assert headers == {
        "content-type": b"video/mp4", "error-type": b"decode-error", "error-message": b"bad bytes",
        "source-topic": b"framewatch.segments", "source-partition": b"3", "source-offset": b"99",
    }
