"""Redis: the publisher (one pipeline per batch) and the look-up API moderation tools use.

Writes follow docs/contracts.md through :class:`worker.contracts.RedisKeys`. A batch is one
MULTI/EXEC transaction on a single Redis node, so a retried batch never half-applies; on Redis
Cluster (``redis.cluster: true``) a batch spans many hash slots, so the pipeline is plain: a
batch retried after a partial failure may repeat history entries (readers see the same pts
twice), and the stream hashes converge on the retry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from framewatch.config import RedisSettings
from worker import contracts as c
from worker.scoring import FrameScore


def connect(settings: RedisSettings) -> Any:
    """A client for one node (``redis.Redis``) or, with ``cluster``, for Redis Cluster."""
    kwargs: dict[str, Any] = {"socket_timeout": settings.socket_timeout_s, "socket_connect_timeout": settings.socket_timeout_s,
                              "health_check_interval": 10}
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, name)
        if value is not None:
            kwargs[name] = str(value)
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


class Publisher:
    def __init__(self, client: redis.Redis, settings: RedisSettings, model_name: str, transactional: bool = True) -> None:
        self.client = client
        self.keys = c.RedisKeys(settings.prefix)
        self.settings = settings
        self.model_name = model_name
        self.transactional = transactional

    def read_state(self, stream_id: str) -> dict[str, str]:
        raw: Any = self.client.hgetall(self.keys.stream(stream_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def write(self, frames: list[ScoredFrame]) -> int:
        """Write one batch (frames in stream order per stream); returns the number of commands."""
        if not frames:
            return 0
        now_ms = int(time.time() * 1000)
        ttl = self.settings.ttl_seconds
        pipe = self.client.pipeline(transaction=self.transactional)
        latest: dict[str, ScoredFrame] = {}
        counts: dict[str, int] = {}
        for item in frames:
            s = item.score
            pipe.xadd(self.keys.history(s.stream_id), {c.H_SCORE: f"{s.score:.6f}", c.H_PTS_MS: s.pts_ms, c.H_EMA: f"{s.ema:.6f}", c.H_OFFSET: item.offset},
                      maxlen=self.settings.history_maxlen, approximate=True)
            latest[s.stream_id] = item
            counts[s.stream_id] = counts.get(s.stream_id, 0) + 1
            if s.alert_event:
                event = {c.A_STREAM: s.stream_id, c.A_EVENT: s.alert_event, c.A_EMA: f"{s.ema:.6f}", c.A_PTS_MS: s.pts_ms,
                         c.A_AT_MS: now_ms, c.A_MODEL: self.model_name}
                pipe.xadd(self.keys.alerts, event, maxlen=self.settings.alerts_maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.publish(self.keys.alerts_channel, json.dumps(event))
        for stream_id, item in latest.items():
            s = item.score
            key = self.keys.stream(stream_id)
            pipe.hset(key, mapping={
                c.F_SCORE: f"{s.score:.6f}", c.F_EMA: f"{s.ema:.6f}", c.F_MAX_RECENT: f"{s.max_recent:.6f}", c.F_PTS_MS: s.pts_ms,
                c.F_UPDATED_AT_MS: now_ms, c.F_MODEL: self.model_name, c.F_ALERT: int(s.alert),
                c.F_PARTITION: item.partition, c.F_OFFSET: item.offset,
            })
            pipe.hincrby(key, c.F_FRAMES, counts[stream_id])
            pipe.expire(key, ttl)
            pipe.expire(self.keys.history(stream_id), ttl)
            pipe.zadd(self.keys.active, {stream_id: s.ema})
        commands = len(pipe)
        pipe.execute()
        return commands


class Scores:
    """Read side, for moderation tools: ``Scores(redis.Redis.from_url(url)).top(10)``."""

    def __init__(self, client: redis.Redis, prefix: str = c.DEFAULT_PREFIX) -> None:
        self.client = client
        self.keys = c.RedisKeys(prefix)

    def get(self, stream_id: str) -> dict[str, Any] | None:
        raw: Any = self.client.hgetall(self.keys.stream(stream_id))
        if not raw:
            return None
        return {k.decode(): _number(v.decode()) for k, v in raw.items()}

    def history(self, stream_id: str, last: int = 20) -> list[dict[str, Any]]:
        entries: Any = self.client.xrevrange(self.keys.history(stream_id), count=last)
        rows = [{"id": entry_id.decode(), **{k.decode(): _number(v.decode()) for k, v in fields.items()}} for entry_id, fields in entries]
        return list(reversed(rows))

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        """The riskiest streams by EMA; ids whose hash expired are removed from the set."""
        out: list[dict[str, Any]] = []
        ranked: Any = self.client.zrevrange(self.keys.active, 0, n * 2 - 1, withscores=True)
        for raw_id, _ema in ranked:
            stream_id = raw_id.decode()
            state = self.get(stream_id)
            if state is None:
                self.client.zrem(self.keys.active, stream_id)
                continue
            out.append({"stream": stream_id, **state})
            if len(out) == n:
                break
        return out

    def alerts(self, last: int = 20) -> list[dict[str, Any]]:
        entries: Any = self.client.xrevrange(self.keys.alerts, count=last)
        return list(reversed([{"id": i.decode(), **{k.decode(): _number(v.decode()) for k, v in f.items()}} for i, f in entries]))

    def follow_alerts(self, block_ms: int = 5000, start: str = "$") -> Iterator[dict[str, Any]]:
        """New alert events as they are added (XREAD BLOCK); runs until the caller stops iterating."""
        last_id = start
        while True:
            response: Any = self.client.xread({self.keys.alerts: last_id}, block=block_ms)
            for _, entries in response or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    yield {"id": last_id, **{k.decode(): _number(v.decode()) for k, v in fields.items()}}


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text
