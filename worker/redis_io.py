"""Redis: the publisher (one pipeline per batch), the upkeep of the ranking, and the look-up API
moderation tools use.

Writes follow docs/contracts.md through :class:`framewatch.worker.contracts.RedisKeys`.

**Single node.** A batch is one MULTI/EXEC transaction: a worker killed mid-write leaves all of it
or none of it, so a replay writes each frame exactly once. The stream hash carries each
partition's last written position (``positions``), the replay guard, in the same transaction.

**Redis Cluster** (``redis.cluster: true``). A batch spans many hash slots, so the pipeline is
plain. Per stream its commands share a slot and run in order: history entries first, the hash
(with ``positions``) last, so a batch cut short is written again rather than skipped: duplicate
history entries are possible after a crash on a cluster, losses are not. Alert events are
written before the batch, in a call of their own, for the same reason. Pub/Sub is never
pipelined (redis-py refuses PUBLISH in a cluster pipeline) and is best effort on both.

**Errors** (docs/reliability.md): a write that Redis refuses for one stream (a key of the wrong
type, an ACL that denies a key) is reported per stream by :meth:`Publisher.write` so the caller
can dead-letter that stream's messages; connection errors raise, and the caller retries.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
import redis.exceptions as rex

from framewatch.config import RedisSettings
from framewatch.logs import get_logger
from framewatch.worker import contracts as c
from framewatch.worker.scoring import REASON_STALE, FrameScore, StreamState

if TYPE_CHECKING:
    from framewatch.worker.evidence import Prepared

log = get_logger("redis")

# Errors after which nothing is known to be written and the same write may simply be tried again.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError, rex.TryAgainError, rex.BusyLoadingError,
    rex.MasterDownError, rex.ClusterError, rex.RedisClusterException, rex.ReadOnlyError,
)


def connect(settings: RedisSettings, writer: bool = False) -> Any:
    """A client for one node (``redis.Redis``) or, with ``cluster``, for Redis Cluster.

    ``writer``: the worker's client. redis-py re-sends a command (a whole MULTI/EXEC included)
    after a timeout by default, even when the server already ran it: the worker's writes are
    not retried by the client, but by the worker, which first re-reads what was written.
    """
    kwargs: dict[str, Any] = {"socket_timeout": settings.socket_timeout_s, "socket_connect_timeout": settings.socket_timeout_s,
                              "health_check_interval": 10}
    if writer and not settings.cluster:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs.update(settings.client_kwargs())
    if settings.cluster:
        from redis.cluster import RedisCluster

        kwargs.pop("health_check_interval")
        return RedisCluster.from_url(settings.url, **kwargs)
    return redis.Redis.from_url(settings.url, **kwargs)


@dataclass(frozen=True)
class ScoredFrame:
    score: FrameScore
    partition: int
    offset: int


def alert_event_fields(stream_id: str, event: str, reason: str, ema: float, pts_ms: int, broadcast: str, model: str,
                       now_ms: int, threshold: float | None = None, score: float | None = None) -> dict[str, str]:
    """One alert event as written to the alerts stream and published. ``event_id`` is the same for
    the same event written twice (a retry on a cluster), so readers can drop the copy."""
    fields = {
        c.A_STREAM: stream_id, c.A_EVENT: event, c.A_REASON: reason, c.A_EMA: f"{ema:.6f}", c.A_PTS_MS: str(pts_ms),
        c.A_AT_MS: str(now_ms), c.A_MODEL: model, c.A_BROADCAST: broadcast,
        c.A_EVENT_ID: f"{stream_id}/{broadcast}/{pts_ms}/{event}",
    }
    if threshold is not None:
        fields[c.A_THRESHOLD] = f"{threshold:.6f}"
    if score is not None:
        fields[c.A_SCORE] = f"{score:.6f}"
    return fields


def state_fields(state: StreamState) -> dict[str, str]:
    """The scorer's state as stream-hash fields (besides the latest frame's, set by the publisher)."""
    return {
        c.F_FRAMES: str(state.frames), c.F_ALERT: str(int(state.alert)), c.F_BROADCAST: state.broadcast,
        c.F_BROADCAST_SEQ: str(state.broadcast_seq), c.F_BROADCAST_FROM_HEADER: str(int(state.broadcast_from_header)),
        c.F_POSITIONS: json.dumps({str(p): list(v) for p, v in sorted(state.positions.items())}, separators=(",", ":")),
        c.F_MESSAGE: "" if state.message is None else ":".join(str(v) for v in state.message),
        c.F_MESSAGE_BASE_MS: str(state.message_base_ms), c.F_END_MS: "" if state.end_ms is None else str(state.end_ms),
        c.F_LAST_PARTITION: "" if state.last_partition is None else str(state.last_partition),
    }


def stream_specific(exc: Exception) -> bool:
    """Whether Redis refused a write for the keys of one stream (a key of another type, an ACL
    rule on keys) rather than for everything (OOM, a read-only replica, a failing disk): only the
    first kind is dead-lettered; the second is retried as long as it lasts."""
    text = str(exc)
    return "WRONGTYPE" in text or ("NOPERM" in text and "key" in text)


def parse_state(raw: dict[str, str]) -> tuple[StreamState, list[str]]:
    """A stream hash as scorer state; fields that cannot be read are skipped and named."""
    state = StreamState()
    bad: list[str] = []

    def read(name: str, cast: Any) -> Any:
        value = raw.get(name)
        if value is None or value == "":
            return None
        try:
            result = cast(value)
        except (ValueError, TypeError, json.JSONDecodeError):
            bad.append(name)
            return None
        if isinstance(result, float) and not math.isfinite(result):
            bad.append(name)
            return None
        return result

    ema = read(c.F_EMA, float)
    pts = read(c.F_PTS_MS, int)
    if ema is not None and pts is not None:  # an EMA without its time cannot be continued
        state.ema, state.last_pts_ms = ema, pts
        max_recent = read(c.F_MAX_RECENT, float)
        if max_recent is not None:
            state.recent.append((pts, max_recent))  # the window's maximum, kept until it leaves the window
    state.alert = raw.get(c.F_ALERT) == "1"
    state.frames = read(c.F_FRAMES, int) or 0
    state.broadcast = raw.get(c.F_BROADCAST) or state.broadcast
    state.broadcast_seq = read(c.F_BROADCAST_SEQ, int) or state.broadcast_seq
    state.broadcast_from_header = raw.get(c.F_BROADCAST_FROM_HEADER) == "1"
    positions = read(c.F_POSITIONS, json.loads)
    if isinstance(positions, dict):
        try:
            state.positions = {int(p): (int(v[0]), int(v[1]), int(v[2])) for p, v in positions.items()}
        except (ValueError, TypeError, IndexError, KeyError):
            bad.append(c.F_POSITIONS)
    elif positions is None and read(c.F_OFFSET, int) is not None and read(c.F_PARTITION, int) is not None:
        # A hash written before positions existed: its last message is known, its frame index is not.
        state.positions = {int(raw[c.F_PARTITION]): (int(raw[c.F_OFFSET]), 1 << 30, -1)}
    message = raw.get(c.F_MESSAGE) or ""
    if message:
        try:
            partition, offset, record_ts = message.split(":")
            state.message = (int(partition), int(offset), int(record_ts))
        except ValueError:
            bad.append(c.F_MESSAGE)
    state.message_base_ms = read(c.F_MESSAGE_BASE_MS, int) or 0
    state.end_ms = read(c.F_END_MS, int)
    state.last_partition = read(c.F_LAST_PARTITION, int)
    return state, bad


# The sweep's check and commit for one quiet stream. KEYS[1] = stream hash; ARGV[1] = cutoff
# (epoch ms); ARGV[2] = "check" or "clear". Returns -1 if the stream was written after the cutoff
# (still live), 0 if it has no open alert, else 1 ("clear": the alert is now off). The clear event
# is written between "check" and "clear", so a worker that dies in between leaves the alert open
# for the next sweep (an event written twice has one event_id), never closed without its event.
_STALE_SCRIPT = """
local updated = tonumber(redis.call('HGET', KEYS[1], 'updated_at_ms') or '0') or 0
if updated >= tonumber(ARGV[1]) then return -1 end
if redis.call('HGET', KEYS[1], 'alert') == '1' then
  if ARGV[2] == 'clear' then redis.call('HSET', KEYS[1], 'alert', '0') end
  return 1
end
return 0
"""


class Publisher:
    def __init__(self, client: Any, settings: RedisSettings, model_name: str, alert_on: float | None = None) -> None:
        self.client = client
        self.alert_on = alert_on
        self.keys = c.RedisKeys(settings.prefix)
        self.settings = settings
        self.model_name = model_name
        self.cluster = settings.cluster
        self.publish_errors = 0
        self._stale_script = client.register_script(_STALE_SCRIPT)

    def read_states(self, stream_ids: Sequence[str]) -> dict[str, tuple[dict[str, str], StreamState | None]]:
        """The stored state of each stream (None: never written, or expired), one round trip."""
        if not stream_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for stream_id in stream_ids:
            pipe.hgetall(self.keys.stream(stream_id))
        out: dict[str, tuple[dict[str, str], StreamState | None]] = {}
        for stream_id, raw in zip(stream_ids, pipe.execute(), strict=True):
            fields = {k.decode(): v.decode("utf-8", "replace") for k, v in (raw or {}).items()}
            out[stream_id] = (fields, parse_state(fields)[0] if fields else None)
        return out

    def write(self, frames: Sequence[ScoredFrame], states: dict[str, StreamState], evidence: Prepared | None = None) -> dict[str, Exception]:
        """Write one batch (frames in stream order per stream) with each stream's final state.
        ``evidence``: the fields its raise events gain (evidence ids, already stored) and the near
        misses to queue, written with the alerts.

        Returns the streams whose commands Redis refused, with the error (the caller dead-letters
        their messages); raises what concerns the whole batch (connection errors, and on a single
        node a transaction Redis aborted before running it: nothing of it was written).
        """
        if not frames:
            return {}
        now_ms = int(time.time() * 1000)
        ttl = self.settings.ttl_seconds
        events = [alert_event_fields(f.score.stream_id, e.event, e.reason, f.score.ema, f.score.pts_ms, e.broadcast,
                                     self.model_name, now_ms, self.alert_on, f.score.score) for f in frames for e in f.score.events]
        near_misses = evidence.near_misses if evidence is not None else []
        if evidence is not None:
            for event in events:
                event.update(evidence.alerts.get(event[c.A_EVENT_ID], {}))
        if self.cluster and (events or near_misses):
            # Before the frames that raise them: an event is never lost to a write cut short,
            # at worst written twice (same event_id).
            alerts = self.client.pipeline(transaction=False)
            for event in events:
                alerts.xadd(self.keys.alerts, event, maxlen=self.settings.alerts_maxlen, approximate=True)
            for near in near_misses:
                alerts.xadd(self.keys.nearmiss, near, maxlen=self.settings.alerts_maxlen, approximate=True)
            alerts.execute()
        pipe = self.client.pipeline(transaction=not self.cluster)
        owners: list[str | None] = []
        failed: dict[str, Exception] = {}
        if not self.cluster:
            for event in events:
                pipe.xadd(self.keys.alerts, event, maxlen=self.settings.alerts_maxlen, approximate=True)
                owners.append(None)
            for near in near_misses:
                pipe.xadd(self.keys.nearmiss, near, maxlen=self.settings.alerts_maxlen, approximate=True)
                owners.append(None)
        latest: dict[str, ScoredFrame] = {}
        history = self.client.pipeline(transaction=False) if self.cluster else pipe
        history_owners: list[str | None] = [] if self.cluster else owners
        for item in frames:
            s = item.score
            entry = {c.H_SCORE: f"{s.score:.6f}", c.H_PTS_MS: s.pts_ms, c.H_EMA: f"{s.ema:.6f}", c.H_OFFSET: item.offset,
                     c.H_PARTITION: item.partition, c.H_BROADCAST: s.broadcast}
            if s.late:
                entry[c.H_LATE] = 1
            history.xadd(self.keys.history(s.stream_id), entry, maxlen=self.settings.history_maxlen, approximate=True)
            history_owners.append(s.stream_id)
            latest[s.stream_id] = item
        if self.cluster:
            # Two phases on a cluster: the cluster pipeline retries commands one by one, so a history
            # entry could fail while its stream's hash (the replay guard) succeeds. The hashes are
            # written only for streams whose history entries are all in.
            failed = self._errors(history_owners, history.execute(raise_on_error=False))
            latest = {k: v for k, v in latest.items() if k not in failed}
        for stream_id, item in latest.items():
            s = item.score
            key = self.keys.stream(stream_id)
            state = states[stream_id]
            # The hash last: it holds `positions`, the replay guard (see the module docstring).
            pipe.hset(key, mapping={
                **state_fields(state),
                c.F_SCORE: f"{s.score:.6f}", c.F_EMA: f"{s.ema:.6f}", c.F_MAX_RECENT: f"{s.max_recent:.6f}",
                c.F_PTS_MS: str(state.last_pts_ms if state.last_pts_ms is not None else s.pts_ms),
                c.F_UPDATED_AT_MS: str(now_ms), c.F_MODEL: self.model_name,
                c.F_PARTITION: str(item.partition), c.F_OFFSET: str(item.offset),
                **({c.F_METADATA: evidence.metadata[stream_id]} if evidence is not None and stream_id in evidence.metadata else {}),
            })
            pipe.expire(key, ttl)
            pipe.expire(self.keys.history(stream_id), ttl)
            owners.extend([stream_id] * 3)
        for stream_id, item in latest.items():
            pipe.zadd(self.keys.active, {stream_id: item.score.ema})
            pipe.zadd(self.keys.active_seen, {stream_id: now_ms})
            owners.extend([None, None])
        if owners:
            failed.update(self._errors(owners, pipe.execute(raise_on_error=False)))
        for event in events:
            if event[c.A_STREAM] not in failed:
                self.publish(event)
        return failed

    @staticmethod
    def _errors(owners: list[str | None], results: list[Any]) -> dict[str, Exception]:
        """The streams whose own commands Redis refused; anything else raises (the whole batch's concern)."""
        failed: dict[str, Exception] = {}
        for owner, result in zip(owners, results, strict=True):
            if isinstance(result, Exception):
                if owner is None or isinstance(result, TRANSIENT_ERRORS) or not stream_specific(result):
                    raise result  # the ranking, the alerts stream, or Redis as a whole
                failed.setdefault(owner, result)
        return failed

    def publish(self, event: dict[str, str]) -> None:
        """Pub/Sub notification of an alert event; best effort (the alerts stream is the record)."""
        try:
            self.client.publish(self.keys.alerts_channel, json.dumps(event))
        except rex.RedisError as exc:
            self.publish_errors += 1
            log.warning("alert publish failed (the alerts stream has the event)", error=str(exc), stream=event.get(c.A_STREAM))

    def sweep(self, stale_after_s: float, limit: int = 500) -> tuple[int, list[dict[str, str]]]:
        """Upkeep of the ranking, run by every worker now and then, whatever readers do: streams
        not written for ``stale_after_s`` leave ``active``; an open alert of such a stream is
        cleared with reason ``stale`` (once, by whichever worker runs first). Returns how many
        ids were removed and the clear events written."""
        now_ms = int(time.time() * 1000)
        cutoff = now_ms - int(stale_after_s * 1000)
        ids: Any = self.client.zrangebyscore(self.keys.active_seen, "-inf", f"({cutoff}", start=0, num=limit)
        removed, cleared = 0, []
        for raw_id in ids:
            stream_id = raw_id.decode()
            key = self.keys.stream(stream_id)
            try:
                outcome = self._stale_script(keys=[key], args=[cutoff, "check"])
                if outcome == -1:
                    continue  # written since: it stays
                if outcome == 1:
                    fields = {k.decode(): v.decode("utf-8", "replace") for k, v in self.client.hgetall(key).items()}
                    state, _ = parse_state(fields)
                    event = alert_event_fields(stream_id, c.ALERT_CLEAR, REASON_STALE, state.ema or 0.0, state.last_pts_ms or 0,
                                               state.broadcast, self.model_name, now_ms)
                    self.client.xadd(self.keys.alerts, event, maxlen=self.settings.alerts_maxlen, approximate=True)
                    if self._stale_script(keys=[key], args=[cutoff, "clear"]) == 1:
                        self.publish(event)
                        cleared.append(event)
            except rex.ResponseError as exc:
                if isinstance(exc, TRANSIENT_ERRORS):
                    raise
                # A key of another type under our name: not ours to repair; it leaves the ranking.
                log.warning("stale sweep: the stream's hash cannot be read; removed from the ranking", stream=stream_id, error=str(exc))
            self.client.zrem(self.keys.active, stream_id)
            self.client.zrem(self.keys.active_seen, stream_id)
            removed += 1
        return removed, cleared


# Fields that are numbers in the contract; everything else (ids, names) stays a string.
_INT_FIELDS = frozenset({c.F_FRAMES, c.F_PTS_MS, c.F_UPDATED_AT_MS, c.F_PARTITION, c.F_OFFSET, c.F_ALERT, c.F_BROADCAST_SEQ,
                         c.F_MESSAGE_BASE_MS, c.F_END_MS, c.F_LAST_PARTITION, c.H_LATE, c.A_AT_MS})
_FLOAT_FIELDS = frozenset({c.F_SCORE, c.F_EMA, c.F_MAX_RECENT})


def typed(name: str, text: str) -> Any:
    """A field's value with the type the contract gives it; a value that is not what it should be
    stays the string it is (never NaN or infinity, which JSON cannot carry)."""
    try:
        if name in _INT_FIELDS:
            return int(text)
        if name in _FLOAT_FIELDS:
            value = float(text)
            return value if math.isfinite(value) else text
    except ValueError:
        return text
    return text


def _fields(raw: Any) -> dict[str, Any]:
    return {k.decode(): typed(k.decode(), v.decode("utf-8", "replace")) for k, v in raw.items()}


class Scores:
    """Read side, for moderation tools: ``Scores(redis.Redis.from_url(url)).top(10)``. It only
    reads, so a read-only ACL user or a replica URL serves it."""

    def __init__(self, client: Any, prefix: str = c.DEFAULT_PREFIX, stale_after_s: float = 120.0, socket_timeout_s: float = 5.0) -> None:
        self.client = client
        self.keys = c.RedisKeys(prefix)
        self.stale_after_s = stale_after_s
        self.socket_timeout_s = socket_timeout_s

    def get(self, stream_id: str) -> dict[str, Any] | None:
        raw: Any = self.client.hgetall(self.keys.stream(stream_id))
        if not raw:
            return None
        return self._with_age(_fields(raw))

    def _with_age(self, state: dict[str, Any]) -> dict[str, Any]:
        updated = state.get(c.F_UPDATED_AT_MS)
        if isinstance(updated, int):
            age_s = max(0.0, time.time() - updated / 1000)
            state["age_s"] = round(age_s, 1)
            state["stale"] = age_s > self.stale_after_s
        return state

    def history(self, stream_id: str, last: int = 20) -> list[dict[str, Any]]:
        entries: Any = self.client.xrevrange(self.keys.history(stream_id), count=last)
        rows = [{"id": entry_id.decode(), **_fields(fields)} for entry_id, fields in entries]
        return list(reversed(rows))

    def top(self, n: int = 10, include_stale: bool = False) -> list[dict[str, Any]]:
        """The riskiest live streams by EMA, each with ``updated_at_ms``, ``age_s`` and ``stale``.
        Streams not written for ``stale_after_s`` are left out unless ``include_stale``; the
        workers remove them from the ranking (:meth:`Publisher.sweep`)."""
        out: list[dict[str, Any]] = []
        start, page = 0, max(2 * n, 20)
        while len(out) < n:
            ranked: Any = self.client.zrevrange(self.keys.active, start, start + page - 1)
            if not ranked:
                break
            pipe = self.client.pipeline(transaction=False)
            for raw_id in ranked:
                pipe.hgetall(self.keys.stream(raw_id.decode()))
            for raw_id, raw in zip(ranked, pipe.execute(), strict=True):
                if not raw:
                    continue  # expired; the workers' sweep removes it from the ranking
                state = self._with_age(_fields(raw))
                if state.get("stale") and not include_stale:
                    continue
                out.append({"stream": raw_id.decode(), **state})
                if len(out) == n:
                    break
            start += page
        return out

    def alerts(self, last: int = 20) -> list[dict[str, Any]]:
        entries: Any = self.client.xrevrange(self.keys.alerts, count=last)
        return list(reversed([{"id": i.decode(), **_fields(f)} for i, f in entries]))

    def last_alert_id(self) -> str:
        """The id of the newest alert event, "0-0" when there is none: where a follower starts so
        that it misses nothing written after this call."""
        entries: Any = self.client.xrevrange(self.keys.alerts, count=1)
        return entries[0][0].decode() if entries else "0-0"

    def follow_alerts(self, after: str | None = None, block_ms: int = 1000, max_backoff_s: float = 10.0,
                      on_error: Any = None) -> Iterator[dict[str, Any]]:
        """Alert events written after the id ``after`` (default: now), as they arrive; survives
        quiet periods and reconnects after Redis errors, resuming from the last event it yielded.
        ``block_ms`` must stay below the client's socket timeout."""
        last_id: str | None = after
        delay = 0.5
        while True:
            try:
                if last_id is None:
                    last_id = self.last_alert_id()
                response: Any = self.client.xread({self.keys.alerts: last_id}, block=block_ms, count=100)
                delay = 0.5
            except (rex.ConnectionError, rex.TimeoutError, rex.ClusterError, rex.RedisClusterException) as exc:
                if on_error is not None:
                    on_error(exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, max_backoff_s)
                continue
            for _, entries in response or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    yield {"id": last_id, **_fields(fields)}
