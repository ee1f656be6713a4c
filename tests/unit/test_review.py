"""Evidence, review and feedback as small units: metadata headers, the evidence encoder, the
recorder's choice of frames and near misses, passwords and sessions, and the export's rules."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from framewatch.config import EvidenceSettings
from framewatch.dashboard.auth import (
    AuthError,
    LoginThrottle,
    Sessions,
    hash_password,
    read_users,
    set_password,
    verify_password,
)
from framewatch.dashboard.feedback import ExportError, assign_splits, consolidate, parse_since
from framewatch.worker import contracts as c
from framewatch.worker.decode import DecodeRequest, EvidenceEncoder, decode_segment
from framewatch.worker.evidence import EvidenceRecorder, LocalEvidenceStore, evidence_id
from framewatch.worker.media import encode_segment
from framewatch.worker.scoring import AlertEvent, FrameScore

# --- metadata headers ---------------------------------------------------------------------


def _parse(headers: list[tuple[str, bytes]]) -> c.SegmentMessage:
    return c.parse_message("t", 0, 0, b"cam", b"x", headers, 1024)


def test_metadata_headers_are_kept_as_clean_text_and_never_reject_a_segment() -> None:
    msg = _parse([(c.HEADER_STREAM_TITLE, "Ranked\x00 finals \u2014 day 2".encode()), (c.HEADER_STREAM_CATEGORY, b"\xff\xfegames"),
                  (c.HEADER_CAPTION, b"")])
    assert dict(msg.metadata) == {c.HEADER_STREAM_TITLE: "Ranked finals \u2014 day 2", c.HEADER_STREAM_CATEGORY: "\ufffd\ufffdgames"}
    long = _parse([(c.HEADER_STREAM_TITLE, b"a" * 5000)])
    assert len(dict(long.metadata)[c.HEADER_STREAM_TITLE]) == c.MAX_METADATA_BYTES
    assert _parse([]).metadata == ()
    assert c.caption({c.HEADER_STREAM_TITLE: "t", c.HEADER_STREAM_CATEGORY: "k"}) == "t. k"
    assert c.caption({c.HEADER_STREAM_TITLE: "t", c.HEADER_CAPTION: "the whole text"}) == "the whole text"
    headers = c.segment_headers("video/mp2t", metadata={c.HEADER_CAPTION: "caption \u00e9"})
    assert (c.HEADER_CAPTION, "caption \u00e9".encode()) in headers
    with pytest.raises(ValueError):
        c.segment_headers("video/mp2t", metadata={"stream-secret": "x"})


# --- the evidence encoder -----------------------------------------------------------------


def test_evidence_frames_keep_the_aspect_never_grow_and_are_jpeg() -> None:
    enc = EvidenceEncoder(480, 4)
    assert enc.size(1920, 1080) == (480, 270) and enc.size(1080, 1920) == (270, 480)
    assert enc.size(320, 240) == (320, 240)  # smaller sources are not enlarged
    assert enc.size(641, 361) == (480, 270)  # even sizes for 4:2:0
    assert EvidenceEncoder(483, 4).size(1920, 1080) == (482, 272)  # an odd long side is never exceeded
    frames = [np.full((180, 320, 3), i * 10, np.uint8) for i in range(20)]
    payload, content_type = encode_segment(frames, 10.0, "mpegts")
    plain = decode_segment(DecodeRequest(payload, content_type, 64, 64, segment_start_ms=0, segment_duration_ms=2000))
    assert plain.frames and all(f.evidence is None for f in plain.frames)
    result = decode_segment(DecodeRequest(payload, content_type, 64, 64, segment_start_ms=0, segment_duration_ms=2000, evidence_long_side=240))
    assert [f.pixels.shape for f in result.frames] == [(64, 64, 3)] * 2
    for f in result.frames:
        picture = Image.open(io.BytesIO(f.evidence or b""))
        assert picture.format == "JPEG" and picture.size == (240, 136)


def test_a_rotated_video_is_seen_upright_by_the_model_and_the_moderator() -> None:
    """A phone's portrait video is stored landscape with a display matrix: decoded as FFmpeg's
    autorotate shows it (checked against `ffmpeg -i` on a rotate=90 MP4), not sideways."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.set_display_rotation(90)  # counterclockwise, as a phone held upright records
        left_white = np.zeros((180, 320, 3), np.uint8)
        left_white[:, :160] = 255
        for _ in range(20):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(left_white, format="rgb24")))
        out.mux(stream.encode())
    result = decode_segment(DecodeRequest(buf.getvalue(), "video/mp4", 64, 64, segment_start_ms=0, segment_duration_ms=2000,
                                          evidence_long_side=240))
    pixels = result.frames[0].pixels
    assert pixels[:32].mean() < 20 and pixels[32:].mean() > 235  # the left half, turned a quarter counterclockwise, is the bottom
    assert Image.open(io.BytesIO(result.frames[0].evidence or b"")).size == (136, 240)  # portrait evidence
    # `framewatch produce` reads such a file upright too (it re-encodes frames without the matrix).
    from framewatch.worker.media import read_video

    path = Path(tempfile.mkdtemp()) / "portrait.mp4"
    path.write_bytes(buf.getvalue())
    frames, _, size = read_video(path)
    first = next(iter(frames))[1]
    assert size == (180, 320) and first.shape == (320, 180, 3) and first[:160].mean() < 20 and first[160:].mean() > 235


# --- the recorder -------------------------------------------------------------------------


def _frame(pts: int, score: float, ema: float, *, raise_: bool = False, alert: bool = False, broadcast: str = "1") -> FrameScore:
    events = (AlertEvent(c.ALERT_RAISE, "ema-above-alert-on", broadcast),) if raise_ else ()
    return FrameScore("cam", pts, score, ema, score, alert or raise_, events, broadcast)


def _recorder(tmp_path: Path, **settings: object) -> tuple[EvidenceRecorder, LocalEvidenceStore, list[tuple[str, str]]]:
    counted: list[tuple[str, str]] = []
    store = LocalEvidenceStore(tmp_path / "ev", 3600, 10_000_000)
    defaults: dict[str, object] = {"near_miss_rate": 0.0}
    recorder = EvidenceRecorder(store, EvidenceSettings(**{**defaults, **settings}), alert_on=0.7, recent_window_s=60, model="m",  # type: ignore[arg-type]
                                counted=lambda what, label: counted.append((what, label)))
    return recorder, store, counted


def test_an_alert_names_its_raising_frame_and_the_best_of_its_window(tmp_path: Path) -> None:
    recorder, store, counted = _recorder(tmp_path)
    title = ((c.HEADER_STREAM_TITLE, "finals"),)
    # The first message names the stream; a later one without metadata keeps it.
    prepared = recorder.prepare([(_frame(0, 0.2, 0.2), b"j0", title, ""), (_frame(1000, 0.95, 0.5), b"j1", (), ""),
                                 (_frame(2000, 0.8, 0.72, raise_=True), b"j2", (), "")])
    fields = prepared.alerts["cam/1/2000/raise"]
    ids = fields[c.A_EVIDENCE].split(",")
    assert ids == [evidence_id("cam", "1", 2000), evidence_id("cam", "1", 1000)]
    trigger, best = store.get(ids[0]), store.get(ids[1])
    assert trigger and best and trigger[1] == b"j2" and best[1] == b"j1"
    assert trigger[0].kind == "trigger" and best[0].kind == "best" and best[0].score == 0.95
    assert trigger[0].metadata == {c.HEADER_STREAM_TITLE: "finals"} and trigger[0].text == "finals"
    assert counted == [("written", "trigger"), ("written", "best")]
    # The best frame left the window (60 s), or a new broadcast began: only the raising frame.
    late = recorder.prepare([(_frame(70_000, 0.75, 0.71, raise_=True), b"j3", (), "")]).alerts["cam/1/70000/raise"]
    assert late[c.A_EVIDENCE] == evidence_id("cam", "1", 70_000)
    recorder.prepare([(_frame(71_000, 0.99, 0.8, alert=True), b"j4", (), "")])
    fresh = recorder.prepare([(_frame(0, 0.9, 0.9, raise_=True, broadcast="2"), b"j5", (), "")]).alerts["cam/2/0/raise"]
    assert fresh[c.A_EVIDENCE] == evidence_id("cam", "2", 0)


def test_metadata_kept_in_the_stream_hash_comes_back_after_a_restart(tmp_path: Path) -> None:
    import json

    recorder, store, _ = _recorder(tmp_path)
    kept = recorder.prepare([(_frame(0, 0.2, 0.2), b"j", ((c.HEADER_STREAM_TITLE, "finals"),), "0:1")]).metadata["cam"]
    restarted, store, _ = _recorder(tmp_path)  # a new worker: nothing in memory, the hash has the JSON
    restarted.restore_metadata("cam", kept)
    restarted.restore_metadata("cam", json.dumps({c.HEADER_STREAM_TITLE: "older", "not-a-header": "x"}))  # known already: kept
    restarted.restore_metadata("other", "{not json")  # unreadable: ignored
    ids = restarted.prepare([(_frame(1000, 0.9, 0.9, raise_=True), b"j", (), "0:2")]).alerts["cam/1/1000/raise"][c.A_EVIDENCE]
    record = store.record(ids.split(",")[0])
    assert record is not None and record.text == "finals" and record.metadata == {c.HEADER_STREAM_TITLE: "finals"}


def test_metadata_headers_are_merged_one_by_one_and_cut_at_a_character(tmp_path: Path) -> None:
    from framewatch.worker.contracts import MAX_METADATA_BYTES, _metadata

    recorder, store, _ = _recorder(tmp_path)
    recorder.prepare([(_frame(0, 0.2, 0.2), b"j", ((c.HEADER_STREAM_TITLE, "finals"), (c.HEADER_STREAM_CATEGORY, "games")), "0:1")])
    recorder.prepare([(_frame(1000, 0.2, 0.2), b"j", ((c.HEADER_STREAM_CATEGORY, "sports"),), "0:2")])  # only a new category
    ids = recorder.prepare([(_frame(2000, 0.9, 0.9, raise_=True), b"j", (), "0:3")]).alerts["cam/1/2000/raise"][c.A_EVIDENCE]
    record = store.record(ids.split(",")[0])
    assert record is not None and record.text == "finals. sports"
    recorder.prepare([(_frame(3000, 0.2, 0.2), b"j", ((c.HEADER_CAPTION, "a caption"),), "0:4")])
    recorder.prepare([(_frame(4000, 0.2, 0.2), b"j", ((c.HEADER_STREAM_TITLE, "semis"),), "0:5")])  # newer than the caption
    ids = recorder.prepare([(_frame(70_000, 0.9, 0.9, raise_=True, broadcast="2"), b"j", (), "0:6")]).alerts["cam/2/70000/raise"][c.A_EVIDENCE]
    record = store.record(ids.split(",")[0])
    assert record is not None and record.text == "semis. sports"
    for raw in ("é".encode() * 600, b"\xff" * 2000):
        text = dict(_metadata({c.HEADER_STREAM_TITLE: raw}))[c.HEADER_STREAM_TITLE]
        assert len(text.encode()) <= MAX_METADATA_BYTES and text.strip("é\ufffd") == ""
    assert dict(_metadata({c.HEADER_STREAM_TITLE: "é".encode() * 600}))[c.HEADER_STREAM_TITLE].endswith("é")


def test_the_same_stream_time_from_another_message_is_other_evidence(tmp_path: Path) -> None:
    """A stream back after its state expired starts again at broadcast 1, stream time 0: its frames
    get new ids (from the message's partition:offset), and a replay of a message the same ones."""
    recorder, store, _ = _recorder(tmp_path)
    first = recorder.prepare([(_frame(0, 0.9, 0.9, raise_=True), b"day one", (), "0:5")]).alerts["cam/1/0/raise"][c.A_EVIDENCE]
    store.hold([first])
    replay = recorder.prepare([(_frame(0, 0.9, 0.9, raise_=True), b"day one", (), "0:5")]).alerts["cam/1/0/raise"][c.A_EVIDENCE]
    later = recorder.prepare([(_frame(0, 0.9, 0.9, raise_=True), b"day three", (), "0:9000")]).alerts["cam/1/0/raise"][c.A_EVIDENCE]
    assert replay == first != later
    assert store.get(first)[1] == b"day one" and store.get(later)[1] == b"day three"  # type: ignore[index]


def test_evidence_that_cannot_be_stored_is_said_in_the_alert(tmp_path: Path) -> None:
    recorder, store, counted = _recorder(tmp_path)
    store.budget = 1  # nothing fits
    fields = recorder.prepare([(_frame(0, 0.9, 0.9, raise_=True), b"jpeg", (), "")]).alerts["cam/1/0/raise"]
    assert fields[c.A_EVIDENCE] == "" and "budget" in fields[c.A_EVIDENCE_ERROR]
    assert ("failed", "budget") in counted
    fresh, _, _ = _recorder(tmp_path / "fresh")
    no_frame = fresh.prepare([(_frame(1000, 0.9, 0.9, raise_=True), None, (), "")]).alerts["cam/1/1000/raise"]
    assert "no frame" in no_frame[c.A_EVIDENCE_ERROR] and c.A_EVIDENCE not in no_frame


def test_near_misses_are_sampled_by_identity_with_a_cooldown(tmp_path: Path) -> None:
    recorder, store, counted = _recorder(tmp_path / "a", near_miss_rate=1.0, near_miss_margin=0.15, near_miss_cooldown_s=10)
    frames = [(_frame(t * 1000, 0.6, ema), b"j", (), "") for t, ema in enumerate([0.5, 0.56, 0.6, 0.62, 0.65])]
    frames += [(_frame(20_000, 0.6, 0.6, alert=True), b"j", (), "")]  # an open alert is not a near miss
    frames += [(_frame(30_000, 0.6, 0.6), b"j", (), "")]  # past the cooldown: another
    entries = recorder.prepare(frames).near_misses
    assert [int(e[c.N_PTS_MS]) for e in entries] == [1000, 30_000]
    assert counted.count(("near-miss", "")) == 2 and counted.count(("written", "near-miss")) == 2
    assert all(store.get(e[c.N_EVIDENCE]) is not None for e in entries) and entries[0][c.N_EVENT_ID] == "cam/1/1000/near-miss"
    # A rate samples by the frame's identity: the same frames whatever the run, about rate of them.
    picks = []
    for run in range(2):
        again, _, _ = _recorder(tmp_path / f"r{run}", near_miss_rate=0.3, near_miss_cooldown_s=0)
        picks.append([int(e[c.N_PTS_MS]) for e in again.prepare([(_frame(t, 0.6, 0.6), b"j", (), "") for t in range(0, 400_000, 1000)]).near_misses])
    assert picks[0] == picks[1] and 80 < len(picks[0]) < 160
    off, _, _ = _recorder(tmp_path / "off", near_miss_rate=0.0)
    assert off.prepare(frames).near_misses == []


# --- passwords, sessions ------------------------------------------------------------------


def test_passwords_are_scrypt_hashed_and_checked(tmp_path: Path) -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert verify_password("correct horse", stored) and not verify_password("correct horsf", stored)
    assert not verify_password("x", "plain$text") and not verify_password("x", "scrypt$bad")
    users = tmp_path / "users"
    set_password(users, "ana", "long enough")
    set_password(users, "ana", "changed it!")
    assert list(read_users(users)) == ["ana"] and verify_password("changed it!", read_users(users)["ana"])
    with pytest.raises(AuthError):
        set_password(users, "bad name", "long enough")
    with pytest.raises(AuthError):
        set_password(users, "ben", "short")
    (tmp_path / "broken").write_text("ana:plaintext\n")
    with pytest.raises(AuthError, match="line 1"):
        read_users(tmp_path / "broken")


def test_sessions_are_signed_expire_and_bind_their_csrf_token() -> None:
    sessions = Sessions(b"s" * 32, max_age_s=60)
    cookie, session = sessions.issue("ana", now=1000.0)
    assert sessions.read(cookie, now=1030.0) == session
    assert sessions.read(cookie, now=1061.0) is None  # expired
    assert Sessions(b"t" * 32).read(cookie, now=1030.0) is None  # another server's secret
    body, sig = cookie.split(".")
    assert sessions.read(body[:-1] + ("A" if body[-1] != "A" else "B") + "." + sig, now=1030.0) is None
    assert sessions.read("x" * 5000) is None and sessions.read(None) is None
    _, other = sessions.issue("ana", now=1000.0)
    assert other.csrf != session.csrf
    with pytest.raises(AuthError):
        Sessions(b"short")
    assert sessions.read(body + ".\u00e9") is None  # non-ASCII is refused, not a crash
    throttle = LoginThrottle(limit=2, window_s=10, max_names=3)
    assert throttle.attempt("ana", now=0) and throttle.attempt("ana", now=1)
    assert not throttle.attempt("ana", now=2) and throttle.attempt("ben", now=2)  # counted before the check: no burst slips through
    assert throttle.attempt("ana", now=12)  # the window moved on
    throttle.succeeded("ana")
    assert throttle.attempt("ana", now=12) and throttle.attempt("ana", now=12)
    for name in ("c1", "c2", "c3"):
        throttle.attempt(name, now=13)
    assert len(throttle.attempts) == 3


# --- the export's rules -------------------------------------------------------------------


def test_the_latest_decision_per_reviewer_counts() -> None:
    def fb(item: str, reviewer: str, label: str) -> dict[str, str]:
        return {c.FB_ITEM: item, c.FB_REVIEWER: reviewer, c.FB_LABEL: label, c.FB_STREAM: item.split("/")[0], c.FB_EVIDENCE: "a" * 32,
                c.FB_KIND: "alert"}

    decided = consolidate([("1-0", fb("s1/1/0/raise", "ana", "violent")), ("2-0", fb("s1/1/0/raise", "ana", "not-violent")),
                           ("3-0", fb("s2/1/0/raise", "ana", "violent")), ("4-0", fb("s2/1/0/raise", "ben", "not-violent")),
                           ("5-0", fb("s3/1/0/raise", "ana", "bogus")), ("6-0", {c.FB_LABEL: "violent"})])
    assert decided["s1/1/0/raise"].labels == {"ana": "not-violent"} and decided["s1/1/0/raise"].last_feedback == "2-0"
    assert decided["s2/1/0/raise"].labels == {"ana": "violent", "ben": "not-violent"}
    assert set(decided) == {"s1/1/0/raise", "s2/1/0/raise"}
    assert decided["s1/1/0/raise"].evidence == ["a" * 32]


def test_split_by_stream_and_since() -> None:
    streams = {f"stream-{i}": "violent" if i % 3 else "non-violent" for i in range(2000)}
    splits = assign_splits(streams, 0.25)
    assert splits == assign_splits(streams, 0.25)
    for label in ("violent", "non-violent"):
        sides = [splits[s] for s, lab in streams.items() if lab == label]
        assert 0.23 < sides.count("test") / len(sides) < 0.27 and 0.13 < sides.count("val") / len(sides) < 0.17
    # Few streams: every split gets every label, whatever the fractions say.
    few = assign_splits({"a": "violent", "b": "violent", "c": "violent", "d": "non-violent", "e": "non-violent", "f": "non-violent"}, 0.01)
    assert sorted(few[s] for s in "abc") == sorted(few[s] for s in "def") == ["test", "train", "val"]
    for streams_by_label in ({"a": "violent", "b": "violent", "c": "violent", "d": "non-violent", "e": "non-violent"},
                             {"a": "violent", "b": "violent", "c": "violent"}):
        with pytest.raises(ExportError, match="too few streams"):
            assign_splits(streams_by_label, 0.2)
    assert parse_since(None) == "-" and parse_since("1764300000000-3") == "1764300000000-3"
    assert parse_since("1764300000000") == parse_since("1764300000") == "1764300000000-0"  # epoch ms or seconds
    with pytest.raises(ExportError, match="digits"):
        parse_since("12345")  # not 1970 by accident: the whole history
    from datetime import UTC, datetime

    midnight = int(datetime(2026, 11, 28, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("2026-11-28T00:00:00+00:00") == parse_since("2026-11-28") == parse_since("20261128") == f"{midnight}-0"
    assert parse_since("2026-11-28T01:00:00+01:00") == f"{midnight}-0"
    with pytest.raises(ExportError):
        parse_since("2026-11")  # not an entry id (those start with epoch ms), and not a date either
    with pytest.raises(ExportError):
        parse_since("last tuesday")


def test_a_stream_stays_on_its_side_as_exports_grow() -> None:
    """Streams are cut by their own hash, not ranked among the export's: a later, larger export
    keeps every earlier test stream in test, so `report --on` it never tests on training streams."""
    small = {f"s{i}": "violent" for i in range(40)} | {f"n{i}": "non-violent" for i in range(40)}
    bigger = small | {f"s{i}": "violent" for i in range(40, 200)} | {f"n{i}": "non-violent" for i in range(40, 200)}
    before, after = assign_splits(small, 0.2), assign_splits(bigger, 0.2)
    assert {s: after[s] for s in small} == before


def test_unsure_beside_a_decisive_label_abstains_on_the_page_as_in_the_export() -> None:
    from framewatch.dashboard.review import Item

    def labelled(decisions: dict[str, str]) -> str:
        return Item("alert", "1-0", "e", "s", "1", 0, 0, None, None, None, "m", "", [], decisions=decisions).label

    assert labelled({"ana": "violent", "ben": "unsure"}) == "violent"
    assert labelled({"ana": "unsure"}) == "unsure" and labelled({}) == ""
    assert labelled({"ana": "violent", "ben": "not-violent", "cy": "unsure"}) == "conflict"


def test_decisions_made_during_an_export_keep_their_evidence_held(services: Any, tmp_path: Path) -> None:
    import time

    import redis

    from framewatch.dashboard.feedback import export_feedback
    from framewatch.dashboard.review import Item, Review
    from framewatch.worker.evidence import EvidenceRecord, LocalEvidenceStore, evidence_id

    store = LocalEvidenceStore(tmp_path / "evidence", 3600, 10**8)
    review = Review(redis.Redis.from_url(services.redis_url), f"ex{time.time_ns()}", store)
    items = []
    for n in range(8):
        stream = f"cam-{n}"
        eid = evidence_id(stream, "1", 1000)
        store.put(EvidenceRecord(eid, stream, "1", 1000, 0.9, 0.8, 0.7, "m", 0, "trigger", text=f"stream {n}"), b"\xff\xd8 a jpeg")
        items.append(Item("alert", f"{n + 1}-0", f"{stream}/1/1000/raise", stream, "1", 1000, 0, 0.8, 0.9, 0.7, "m", "", [eid]))
        review.decide(items[-1], "ana", "violent" if n < 4 else "not-violent")
    # Half gone (its record lost): not exported, and its hold is cleared rather than kept forever.
    store._path(items[3].evidence[0], ".json").unlink()

    def meanwhile(number: int, total: int) -> None:
        if number == 1:  # a second reviewer disagrees while the export runs
            review.decide(items[0], "ben", "not-violent")

    summary = export_feedback(review, tmp_path / "out", progress=meanwhile)
    assert summary["exported_items"] == 7 and summary["decided_during_export"] == 1 and summary["missing_evidence"] == 1
    assert not store._path(items[3].evidence[0], ".held").exists()
    assert store._path(items[0].evidence[0], ".held").exists()  # a conflict now: held for the next export
    assert not store._path(items[1].evidence[0], ".held").exists()  # exported and released


def test_an_unreachable_store_never_holds_an_alert_back(tmp_path: Path) -> None:
    import time

    from framewatch.config import RedisSettings
    from framewatch.worker.evidence import open_store

    # A real client to a port where nothing listens: refused at once, then skipped for BREAK_S.
    dead = open_store(EvidenceSettings(backend="redis", redis_url="redis://127.0.0.1:1/0"), RedisSettings())
    assert dead is not None
    counted: list[tuple[str, str]] = []
    now = [0.0]
    recorder = EvidenceRecorder(dead, EvidenceSettings(), 0.7, 60, "m", counted=lambda w, label: counted.append((w, label)),
                                monotonic=lambda: now[0])
    started = time.monotonic()
    first = recorder.prepare([(_frame(0, 0.9, 0.9, raise_=True), b"j", (), "")]).alerts["cam/1/0/raise"]
    assert "ConnectionError" in first[c.A_EVIDENCE_ERROR] and ("failed", "error") in counted
    second = recorder.prepare([(_frame(90_000, 0.9, 0.9, raise_=True, broadcast="2"), b"j", (), "")]).alerts["cam/2/90000/raise"]
    assert "skipped" in second[c.A_EVIDENCE_ERROR]  # not tried again inside the break
    assert time.monotonic() - started < 5
    # A store in the scores' Redis: a batch whose scores were written ends the break (a retried
    # batch after a short outage gets its evidence instead of "skipped").
    shared = EvidenceRecorder(dead, EvidenceSettings(), 0.7, 60, "m", monotonic=lambda: now[0], shares_scores_redis=True)
    shared.prepare([(_frame(0, 0.9, 0.9, raise_=True), b"j", (), "")])
    shared.commit(shared.prepare([]))
    again = shared.prepare([(_frame(90_000, 0.9, 0.9, raise_=True, broadcast="2"), b"j", (), "")]).alerts["cam/2/90000/raise"]
    assert "ConnectionError" in again[c.A_EVIDENCE_ERROR]  # tried again, not skipped
    # A store that accepts and never answers (slow, not down): a written batch does not end the skip,
    # or every batch with an alert would wait for its timeout again.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        slow = open_store(EvidenceSettings(backend="redis", redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0"),
                          RedisSettings(socket_timeout_s=0.3))
        assert slow is not None
        waiting = EvidenceRecorder(slow, EvidenceSettings(), 0.7, 60, "m", monotonic=lambda: now[0], shares_scores_redis=True)
        assert "Timeout" in waiting.prepare([(_frame(0, 0.9, 0.9, raise_=True), b"j", (), "")]).alerts["cam/1/0/raise"][c.A_EVIDENCE_ERROR]
        waiting.commit(waiting.prepare([]))
        later = waiting.prepare([(_frame(90_000, 0.9, 0.9, raise_=True, broadcast="2"), b"j", (), "")]).alerts["cam/2/90000/raise"]
        assert "skipped" in later[c.A_EVIDENCE_ERROR]
    finally:
        silent.close()
    now[0] += EvidenceRecorder.BREAK_S + 1
    third = recorder.prepare([(_frame(0, 0.9, 0.9, raise_=True, broadcast="3"), b"j", (), "")]).alerts["cam/3/0/raise"]
    assert "ConnectionError" in third[c.A_EVIDENCE_ERROR]  # tried again after it


def test_a_retried_batch_queues_its_near_miss_again(tmp_path: Path) -> None:
    recorder, _, _ = _recorder(tmp_path, near_miss_rate=1.0, near_miss_cooldown_s=60)
    batch = [(_frame(1000, 0.6, 0.6), b"j", (), "")]
    first = recorder.prepare(batch)
    again = recorder.prepare(batch)  # the write failed: the same batch is prepared again
    assert len(first.near_misses) == len(again.near_misses) == 1
    recorder.commit(again)
    assert recorder.prepare([(_frame(2000, 0.6, 0.6), b"j", (), "")]).near_misses == []  # written: the cooldown runs


def test_the_held_out_comparison_resamples_streams_and_says_when_there_are_too_few() -> None:
    from framewatch.training.heldout import paired_bootstrap

    rng = np.random.default_rng(0)
    groups = [f"s{i // 5}" for i in range(100)]  # 20 streams of 5 frames
    truth = np.array([(i // 5) % 2 for i in range(100)])
    perfect = (truth.astype(float), 0.5)
    coin = (rng.random(100), 0.5)
    better = paired_bootstrap(truth, coin, perfect, groups, rounds=500)
    assert better["accuracy"]["differs"] and better["accuracy"]["ci95"][0] > 0 and better["accuracy"]["difference"] > 0.2
    same = paired_bootstrap(truth, perfect, perfect, groups, rounds=200)
    assert same["f1"] == {"difference": 0.0, "ci95": [0.0, 0.0], "differs": False}
    # 10 streams, 2 of them violent: a perfect model against one that never says violent differs in
    # recall in every draw (unstratified, one draw in ten had no violent stream and the interval reached 0).
    groups10 = [f"s{i // 5}" for i in range(50)]
    truth10 = np.array([int(i // 5 < 2) for i in range(50)])
    blind = paired_bootstrap(truth10, (np.zeros(50), 0.5), (truth10.astype(float), 0.5), groups10, rounds=500)
    assert blind["recall"]["differs"] and blind["recall"]["ci95"] == [1.0, 1.0]
    few = paired_bootstrap(truth[:10], (coin[0][:10], 0.5), (perfect[0][:10], 0.5), groups[:10])
    assert few["accuracy"]["ci95"] is None and few["accuracy"]["differs"] is None and "too few" in few["accuracy"]["note"]


def _asgi_get(app: Any, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app, no server and no HTTP client library."""
    import asyncio

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def test_pages_answer_503_when_redis_or_the_store_is_away() -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from framewatch.dashboard.app import DashboardConfig, create_app
    from framewatch.dashboard.auth import Sessions
    from framewatch.dashboard.review import Review
    from framewatch.worker.evidence import RedisEvidenceStore

    dead = redis.Redis(port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))  # nothing listens on port 1
    sessions = Sessions(b"a session secret of 32 bytes....")
    app = create_app(Review(dead, "fw", RedisEvidenceStore(dead, "fw:evidence", 3600, 10**6)), DashboardConfig(), sessions)
    cookie, _ = sessions.issue("ana")
    for path in ("/", "/api/state", "/evidence/" + "0" * 32, "/review/alert/1-0"):
        status, headers, body = _asgi_get(app, path, {"host": "127.0.0.1", "cookie": f"fw_session={cookie}"})
        assert status == 503 and body.startswith(b"unavailable") and headers.get("retry-after") == "5", (path, status, body)


def test_origins_compare_by_host_and_port_not_by_spelling() -> None:
    from framewatch.dashboard.app import safe_next, same_site

    assert same_site("http://review.example.com", "Review.Example.com:80") and same_site("http://Review.example.com:8780", "review.example.com:8780")
    assert same_site("https://review.example.com", "review.example.com")  # TLS ended at a proxy that kept Host
    assert not same_site("https://review.example.com", "review.example.com:8780") and not same_site("https://evil.example", "review.example.com")
    assert not same_site("http://review.example.com.evil.example", "review.example.com") and not same_site("http://[::1", "x")
    assert safe_next("/review/alert/1-0?x=1") == "/review/alert/1-0?x=1"
    for hostile in ("//evil.example/x", "https://evil.example", "/\\evil.example", "/a\nb", "", "javascript:alert(1)"):
        assert safe_next(hostile) == "/", hostile


def test_the_evidence_redis_is_a_cluster_when_its_setting_says_so(services: Any) -> None:
    """evidence.cluster decides the client whatever redis.cluster is (default: redis.cluster)."""
    import redis
    from redis.exceptions import RedisClusterException

    from framewatch.config import RedisSettings
    from framewatch.worker.evidence import open_store

    plain = open_store(EvidenceSettings(backend="redis", redis_url=services.redis_url, cluster=False), RedisSettings(cluster=True))
    assert plain is not None and type(plain.client) is redis.Redis  # type: ignore[attr-defined]
    with pytest.raises(RedisClusterException):  # a cluster client asks the (plain) server for its slots
        open_store(EvidenceSettings(backend="redis", redis_url=services.redis_url, cluster=True), RedisSettings())
    # Unset: a separate evidence.redis_url is a plain instance even beside a cluster of scores (as before the setting).
    separate = open_store(EvidenceSettings(backend="redis", redis_url=services.redis_url), RedisSettings(cluster=True))
    assert separate is not None and type(separate.client) is redis.Redis  # type: ignore[attr-defined]
