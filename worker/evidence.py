"""Evidence: the frames behind an alert, stored before the alert that names them is written.

**What is kept.** The decode processes encode every sampled frame as a JPEG of at most
``evidence.long_side`` pixels (:class:`framewatch.worker.decode.EvidenceEncoder`). After
scoring, :class:`EvidenceRecorder` keeps, per stream, the best-scoring frame of the recent window
(in memory, only when it scores at least ``hold_above``). When a frame raises an alert, the
raising frame and the window's best frame are written to the store, and only then is the alert
written, naming them (``evidence`` field). A frame whose EMA comes within ``near_miss_margin``
of ``alert_on`` without an alert is a *near miss*; a sample of them is written with its evidence
to ``framewatch:nearmiss`` for review.

**Ids are deterministic** (stream, broadcast, stream time): a message read again after a crash
writes the same ids again, so a worker killed between its evidence and its alert leaves evidence
that the replay overwrites and names, or that retention deletes — never an alert without evidence.

**Stores** register themselves (:func:`register_store`); :func:`open_store` builds the one the
configuration names. Two ship here: ``redis`` (keys under their own prefix and hash tag, a TTL,
and a byte budget enforced atomically by a script: the oldest unlabelled evidence makes room, and
evidence that cannot fit is refused — it never pushes out the scores) and ``local`` (a directory:
one node, or a volume the dashboard shares). A labelled alert's evidence is *held* (no TTL, never
evicted) until ``framewatch feedback export`` releases it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from framewatch.config import EvidenceSettings, RedisSettings
from framewatch.errors import FrameWatchError
from framewatch.logs import get_logger
from framewatch.worker import contracts as c

log = get_logger("evidence")

KIND_TRIGGER = "trigger"  # the frame that raised the alert
KIND_BEST = "best"  # the best-scoring frame of the alert's window
KIND_NEAR_MISS = "near-miss"
MAX_HELD_STREAMS = 20_000  # streams whose window-best frame is kept in memory (least recently updated leave first)


class EvidenceError(FrameWatchError):
    """Evidence could not be stored; ``reason`` is the metric label (budget, error)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def evidence_id(stream_id: str, broadcast: str, pts_ms: int, origin: str = "") -> str:
    """The same frame of the same message always gets the same id (hex: safe in URLs and file
    names). ``origin`` is the message's ``partition:offset``: (stream, broadcast, stream time)
    alone repeats when a stream comes back after its state expired (idle past redis.ttl_seconds:
    the broadcast counts from 1 again and stream time from 0), and a reused id overwrote a
    moderator's labelled evidence with another frame. A replayed message has the same offset."""
    tail = f"\x00{origin}" if origin else ""
    return hashlib.sha256(f"{stream_id}\x00{broadcast}\x00{pts_ms}{tail}".encode()).hexdigest()[:32]


def valid_id(text: str) -> bool:
    return len(text) == 32 and all(ch in "0123456789abcdef" for ch in text)


@dataclass
class EvidenceRecord:
    """What is stored beside the image (JSON): enough to make it a labelled image–text pair."""

    id: str
    stream: str
    broadcast: str
    pts_ms: int
    score: float
    ema: float
    threshold: float
    model: str
    at_ms: int
    kind: str
    metadata: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the training caption (contracts.caption of metadata)
    size: int = 0  # bytes of the image

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> EvidenceRecord:
        data = json.loads(raw)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class EvidenceStore(Protocol):
    name: str

    def put(self, record: EvidenceRecord, image: bytes) -> None: ...
    def get(self, evidence: str) -> tuple[EvidenceRecord, bytes] | None: ...
    def record(self, evidence: str) -> EvidenceRecord | None: ...
    def hold(self, ids: Iterable[str]) -> None: ...
    def release(self, ids: Iterable[str]) -> None: ...
    def sweep(self) -> int: ...
    def usage(self) -> dict[str, int]: ...


StoreFactory = Callable[[EvidenceSettings, RedisSettings], EvidenceStore]
_STORES: dict[str, StoreFactory] = {}


def register_store(name: str, factory: StoreFactory) -> None:
    _STORES[name] = factory


def open_store(settings: EvidenceSettings, redis_settings: RedisSettings) -> EvidenceStore | None:
    """The configured store; None for ``backend: none``."""
    if settings.backend == "none":
        return None
    if settings.backend not in _STORES:
        raise EvidenceError("error", f"evidence.backend {settings.backend!r} is not one of {sorted(_STORES)}")
    return _STORES[settings.backend](settings, redis_settings)


# --- Redis -----------------------------------------------------------------------------------

# Keys (one hash tag, so every script runs on Redis Cluster too): index (zset: *unheld* ids by the
# server's time of their put — eviction order and grace never depend on a worker's clock), sizes
# (hash id -> bytes), held (set), total (bytes of everything), heldbytes (bytes of held evidence).
# Held evidence is outside the index: eviction never meets it.
_KEYS = ("index", "sizes", "held", "total", "heldbytes")

# KEYS: the five above, image, meta. ARGV: id, image, meta JSON, ttl ms, budget bytes, image key
# prefix, meta key prefix, grace ms.
# Returns 1 (stored), -1 (larger than the whole budget), -2 (held evidence leaves no room),
# -3 (everything evictable is younger than the grace: alerts may not have named it yet).
# It decides before it changes anything: a refused put evicts nothing.
_PUT = """
local id, size, budget = ARGV[1], string.len(ARGV[2]) + string.len(ARGV[3]), tonumber(ARGV[5])
if size > budget then return -1 end
-- Labelled (held) evidence is never rewritten: a replay would write the same frame, and nothing
-- else may replace what a moderator decided on.
if redis.call('SISMEMBER', KEYS[3], id) == 1 then return 1 end
local old = tonumber(redis.call('HGET', KEYS[2], id) or '0')
local heldbytes = tonumber(redis.call('GET', KEYS[5]) or '0')
if heldbytes + size > budget then return -2 end
local total = tonumber(redis.call('GET', KEYS[4]) or '0') - old
-- Entries whose keys expired (their TTL) leave the index, oldest first.
for _, gone in ipairs(redis.call('ZRANGE', KEYS[1], 0, 63)) do
  if gone ~= id and redis.call('EXISTS', ARGV[6] .. gone) == 0 then
    total = total - tonumber(redis.call('HGET', KEYS[2], gone) or '0')
    redis.call('HDEL', KEYS[2], gone)
    redis.call('ZREM', KEYS[1], gone)
    redis.call('DEL', ARGV[7] .. gone)
  else
    break
  end
end
-- What expired is gone for good: kept in the total even if this put is refused below.
redis.call('SET', KEYS[4], total + old)
-- Room: the oldest unheld evidence goes, but none younger than the grace (by the server's clock,
-- the same for every worker).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local victims, freed = {}, 0
if total + size > budget then
  local young = now - tonumber(ARGV[8])
  -- At most 256 candidates: the scan stays O(1) in the index's size (a full store of 60 000
  -- entries blocked Redis ~33 ms a put without the LIMIT); 256 of the oldest free any sane frame.
  for _, victim in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', young, 'LIMIT', 0, 256)) do
    if victim ~= id and redis.call('SISMEMBER', KEYS[3], victim) == 0 then
      table.insert(victims, victim)
      freed = freed + tonumber(redis.call('HGET', KEYS[2], victim) or '0')
      if total - freed + size <= budget then break end
    end
  end
  if total - freed + size > budget then return -3 end
end
for _, victim in ipairs(victims) do
  redis.call('HDEL', KEYS[2], victim)
  redis.call('ZREM', KEYS[1], victim)
  redis.call('DEL', ARGV[6] .. victim, ARGV[7] .. victim)
end
total = total - freed
redis.call('SET', KEYS[6], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[7], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], now, id)
redis.call('HSET', KEYS[2], id, size)
redis.call('SET', KEYS[4], total + size)
return 1
"""

# KEYS: the five (image and meta keys are built from the prefixes: one hash tag keeps them in the
# same slot on a cluster). ARGV: image prefix, meta prefix, then ids.
# Only evidence that exists is held (a gone id never lingers in the set).
_HOLD = """
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('SISMEMBER', KEYS[3], id) == 0 and redis.call('EXISTS', ARGV[1] .. id) == 1 then
    redis.call('SADD', KEYS[3], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('INCRBY', KEYS[5], tonumber(redis.call('HGET', KEYS[2], id) or '0'))
    redis.call('PERSIST', ARGV[1] .. id)
    redis.call('PERSIST', ARGV[2] .. id)
    n = n + 1
  end
end
return n
"""

# ARGV: image prefix, meta prefix, (unused), retention ms, then ids. Back under retention (counted
# from when the evidence was written, at least a minute) and into the eviction order; times by the
# server's clock (a writer's clock ahead of it cannot make exported evidence outlive newer).
# A record that cannot be read is treated as gone: decoded before anything changes.
_RELEASE = """
local n = 0
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for i = 5, #ARGV do
  local id = ARGV[i]
  if redis.call('SISMEMBER', KEYS[3], id) == 1 then
    local meta = redis.call('GET', ARGV[2] .. id)
    local at = nil
    if meta then
      local ok, data = pcall(cjson.decode, meta)
      if ok and type(data) == 'table' then at = tonumber(data['at_ms']) end
    end
    redis.call('SREM', KEYS[3], id)
    redis.call('DECRBY', KEYS[5], tonumber(redis.call('HGET', KEYS[2], id) or '0'))
    if at and redis.call('EXISTS', ARGV[1] .. id) == 1 then
      at = math.min(at, now)
      local left = math.max(60000, at + tonumber(ARGV[4]) - now)
      redis.call('PEXPIRE', ARGV[1] .. id, left)
      redis.call('PEXPIRE', ARGV[2] .. id, left)
      -- Back in the eviction order at the time it was written: exported evidence goes first.
      redis.call('ZADD', KEYS[1], at, id)
    else
      -- Half gone (evicted by a maxmemory policy): the rest goes too, and leaves the total.
      redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[2], id) or '0'))
      redis.call('HDEL', KEYS[2], id)
      redis.call('DEL', ARGV[1] .. id, ARGV[2] .. id)
    end
    n = n + 1
  end
end
return n
"""


class RedisEvidenceStore:
    """Evidence in Redis under ``{prefix}:{ev}:…`` (one hash tag). Keys expire after
    ``retention_s``; the sum of their sizes stays under ``budget_mb``."""

    name = "redis"

    def __init__(self, client: Any, prefix: str, retention_s: int, budget_bytes: int, clock: Callable[[], float] = time.time,
                 grace_s: float = 10.0) -> None:
        self.client = client
        self.base = f"{prefix}:{{ev}}"
        self.retention_ms = retention_s * 1000
        self.budget = budget_bytes
        self.clock = clock
        self.grace_ms = int(grace_s * 1000)
        self._put = client.register_script(_PUT)
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    def _image(self, evidence: str) -> str:
        return f"{self.base}:img:{evidence}"

    def _meta(self, evidence: str) -> str:
        return f"{self.base}:meta:{evidence}"

    @property
    def _keys(self) -> list[str]:
        return [f"{self.base}:{name}" for name in _KEYS]

    def put(self, record: EvidenceRecord, image: bytes) -> None:
        record.size = len(image)
        outcome = self._put(keys=[*self._keys, self._image(record.id), self._meta(record.id)],
                            args=[record.id, image, record.to_json(), self.retention_ms, self.budget, f"{self.base}:img:",
                                  f"{self.base}:meta:", self.grace_ms])
        if outcome == -1:
            raise EvidenceError("budget", f"evidence of {len(image)} bytes is larger than the whole budget ({self.budget} bytes)")
        if outcome == -2:
            raise EvidenceError("budget", "labelled evidence waiting for `framewatch feedback export` fills the budget")
        if outcome == -3:
            raise EvidenceError("budget", "no room: the evictable evidence is younger than its grace period, or more than the 256 "
                                "oldest entries would have to go for this one; raise evidence.budget_mb")

    def get(self, evidence: str) -> tuple[EvidenceRecord, bytes] | None:
        meta, image = self.client.mget([self._meta(evidence), self._image(evidence)])
        if meta is None or image is None:
            return None
        return EvidenceRecord.from_json(meta), image

    def record(self, evidence: str) -> EvidenceRecord | None:
        meta = self.client.get(self._meta(evidence))
        return EvidenceRecord.from_json(meta) if meta is not None else None

    def hold(self, ids: Iterable[str]) -> None:
        ids = [e for e in ids if valid_id(e)]
        if ids:
            self._hold(keys=self._keys, args=[f"{self.base}:img:", f"{self.base}:meta:", *ids])

    def release(self, ids: Iterable[str]) -> None:
        ids = [e for e in ids if valid_id(e)]
        if ids:
            self._release(keys=self._keys, args=[f"{self.base}:img:", f"{self.base}:meta:", int(self.clock() * 1000), self.retention_ms, *ids])

    def sweep(self) -> int:
        return 0  # keys expire by themselves; the index forgets them at the next put

    def usage(self) -> dict[str, int]:
        total, held_bytes = self.client.mget([self._keys[3], self._keys[4]])
        items, held = self.client.zcard(self._keys[0]), self.client.scard(self._keys[2])
        return {"bytes": int(total or 0), "held_bytes": int(held_bytes or 0), "items": int(items) + int(held), "held": int(held),
                "budget": self.budget}

    def memory_warning(self) -> str | None:
        """Why this budget may push out other keys of the same Redis, or None (best effort: INFO may be denied)."""
        try:
            info = self.client.info("memory")
        except Exception:
            return None
        limit, policy = int(info.get("maxmemory", 0) or 0), str(info.get("maxmemory_policy", ""))
        if limit and self.budget > limit // 4:
            return (f"evidence.budget_mb ({self.budget >> 20} MiB) is over a quarter of this Redis's maxmemory ({limit >> 20} MiB, "
                    f"policy {policy}): with the scores in the same Redis, give evidence its own database or instance "
                    "(evidence.redis_url) or a smaller budget")
        return None


def _redis_store(settings: EvidenceSettings, redis_settings: RedisSettings) -> EvidenceStore:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No client retries and a short timeout: an evidence store that does not answer must not hold
    # scoring up (the recorder then skips evidence for a while; alerts go out saying so).
    timeout = min(redis_settings.socket_timeout_s, 2.0)
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    kwargs.update(redis_settings.client_kwargs())
    url = settings.redis_url or redis_settings.url
    # Default: the scores' kind for the scores' Redis; a separate evidence.redis_url is a plain
    # instance unless evidence.cluster says otherwise (as before the setting existed).
    cluster = settings.cluster if settings.cluster is not None else (redis_settings.cluster and settings.redis_url is None)
    if cluster:
        from redis.cluster import RedisCluster

        client: Any = RedisCluster.from_url(url, **kwargs)
    else:
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **kwargs)
    return RedisEvidenceStore(client, settings.prefix, settings.retention_s, int(settings.budget_mb * 1024 * 1024))


register_store("redis", _redis_store)


# --- a local directory -------------------------------------------------------------------------


class LocalEvidenceStore:
    """Evidence as files: ``DIR/ab/<id>.jpg`` and ``<id>.json`` (written last: the record is what
    makes evidence visible), ``<id>.held`` while labelled. :meth:`sweep` (the worker calls it now
    and then) deletes what is past retention; a put that would pass the budget sweeps the oldest
    unheld first (see :meth:`sweep`)."""

    name = "local"

    def __init__(self, root: Path, retention_s: int, budget_bytes: int, clock: Callable[[], float] = time.time,
                 grace_s: float = 10.0) -> None:
        self.root = Path(root)
        self.retention_s = retention_s
        self.budget = budget_bytes
        self.clock = clock
        self.grace_s = grace_s
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvidenceError("error", f"evidence.dir {self.root} cannot be created: {exc.strerror}") from None
        self._bytes: int | None = None

    def _path(self, evidence: str, suffix: str) -> Path:
        return self.root / evidence[:2] / f"{evidence}{suffix}"

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def put(self, record: EvidenceRecord, image: bytes) -> None:
        record.size = len(image)
        if self._path(record.id, ".held").exists() and self._path(record.id, ".json").exists():
            return  # labelled evidence is never rewritten (as in the Redis store)
        if len(image) > self.budget:
            raise EvidenceError("budget", f"evidence of {len(image)} bytes is larger than the whole budget ({self.budget} bytes)")
        if self._bytes is None or self._bytes + len(image) > self.budget:
            self.sweep(room=len(image))
            if self._bytes is not None and self._bytes + len(image) > self.budget:
                raise EvidenceError("budget", "labelled evidence waiting for `framewatch feedback export`, and evidence younger "
                                    f"than {self.grace_s:g} s that alerts may be about to name, fill the budget")
        try:
            self._write(self._path(record.id, ".jpg"), image)
            self._write(self._path(record.id, ".json"), record.to_json().encode())
        except OSError as exc:
            raise EvidenceError("error", f"evidence cannot be written to {self.root}: {exc.strerror}") from None
        self._bytes = (self._bytes or 0) + len(image)

    def get(self, evidence: str) -> tuple[EvidenceRecord, bytes] | None:
        if not valid_id(evidence):
            return None
        try:
            record = EvidenceRecord.from_json(self._path(evidence, ".json").read_bytes())
            return record, self._path(evidence, ".jpg").read_bytes()
        except (OSError, ValueError, TypeError):
            return None

    def record(self, evidence: str) -> EvidenceRecord | None:
        if not valid_id(evidence):
            return None
        try:
            return EvidenceRecord.from_json(self._path(evidence, ".json").read_bytes())
        except (OSError, ValueError, TypeError):
            return None

    def hold(self, ids: Iterable[str]) -> None:
        for evidence in ids:
            if valid_id(evidence) and self._path(evidence, ".json").exists():  # a gone id is never held
                self._write(self._path(evidence, ".held"), b"")

    def release(self, ids: Iterable[str]) -> None:
        for evidence in ids:
            if valid_id(evidence):
                with contextlib.suppress(FileNotFoundError):
                    self._path(evidence, ".held").unlink()

    def _entries(self) -> list[tuple[float, str, int, bool]]:
        """(written at, id, bytes, held) of every stored image."""
        out = []
        for folder in self.root.iterdir() if self.root.exists() else []:
            if not folder.is_dir():
                continue
            for path in folder.glob("*.jpg"):
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    out.append((stat.st_mtime, path.stem, stat.st_size, self._path(path.stem, ".held").exists()))
        return sorted(out)

    def _delete(self, evidence: str) -> None:
        for suffix in (".json", ".jpg"):  # the record first: a half-deleted entry is invisible
            with contextlib.suppress(FileNotFoundError):
                self._path(evidence, suffix).unlink()

    def sweep(self, room: int = 0) -> int:
        """Deletes unheld evidence past retention, then, when ``room`` bytes are to be written,
        the oldest unheld until a tenth of the budget is free beyond them — so the directory is
        scanned once per tenth of the budget, not at every put of a full store (404 ms a put at
        10 000 files) — but nothing younger than the grace: an alert may be about to name it (a
        put sweeping away the trigger frame its own alert named milliseconds earlier)."""
        now = self.clock()
        cutoff, young = now - self.retention_s, now - self.grace_s
        target = self.budget - room - (self.budget // 10 if room else 0)
        entries = self._entries()
        removed = 0
        total = sum(size for _, _, size, _ in entries)
        for written, evidence, size, held in entries:
            if held:
                continue
            if written < cutoff or (room and total > target and written < young):
                self._delete(evidence)
                total -= size
                removed += 1
        # Stray temporary files of a writer that died mid-write.
        for folder in self.root.iterdir() if self.root.exists() else []:
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
                with contextlib.suppress(FileNotFoundError):
                    if tmp.stat().st_mtime < self.clock() - 600:
                        tmp.unlink()
        self._bytes = total
        return removed

    def usage(self) -> dict[str, int]:
        entries = self._entries()
        return {"bytes": sum(e[2] for e in entries), "items": len(entries), "held": sum(1 for e in entries if e[3]), "budget": self.budget}


register_store("local", lambda s, _r: LocalEvidenceStore(s.dir, s.retention_s, int(s.budget_mb * 1024 * 1024)))


# --- the recorder (the worker's inference thread) ---------------------------------------------


@dataclass
class _Best:
    broadcast: str
    pts_ms: int
    score: float
    ema: float
    jpeg: bytes
    origin: str = ""


@dataclass
class Prepared:
    """What one batch's evidence adds to its Redis write."""

    alerts: dict[str, dict[str, str]] = field(default_factory=dict)  # raise event_id -> fields added to the event
    near_misses: list[dict[str, str]] = field(default_factory=list)  # entries of framewatch:nearmiss
    cooldowns: dict[str, tuple[str, int]] = field(default_factory=dict)  # stream -> its near miss here (kept on commit)
    metadata: dict[str, str] = field(default_factory=dict)  # stream -> JSON of metadata its messages here carried (the stream hash keeps it)


class EvidenceRecorder:
    """Keeps the best frame of each stream's window and writes evidence for raises and near misses.

    A store that fails with anything but a refusal (unreachable, timing out) is skipped for
    ``BREAK_S``: alerts go out at once with ``evidence_error`` instead of waiting on it each time."""

    BREAK_S = 30.0

    def __init__(self, store: EvidenceStore, settings: EvidenceSettings, alert_on: float, recent_window_s: float, model: str,
                 counted: Callable[[str, str], None] = lambda what, label: None, after_alert_evidence: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 shares_scores_redis: bool = False) -> None:
        self.store = store
        # The store lives in the scores' Redis: a batch whose scores were written proves it is back.
        self.shares_scores_redis = shares_scores_redis
        self.settings = settings
        self.alert_on = alert_on
        self.window_ms = recent_window_s * 1000
        self.model = model
        self.counted = counted
        self.after_alert_evidence = after_alert_evidence
        self.clock = clock
        self.monotonic = monotonic
        self.best: OrderedDict[str, _Best] = OrderedDict()
        self.metadata: OrderedDict[str, tuple[tuple[str, str], ...]] = OrderedDict()
        self.last_near_miss: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._skip_until = 0.0
        self._skip_clears = False

    def _note_metadata(self, stream_id: str, metadata: tuple[tuple[str, str], ...]) -> None:
        """The latest metadata of a stream, header by header: a message without a header keeps its
        last value (one that sends only a new category keeps the title)."""
        if metadata:
            merged = dict(self.metadata.get(stream_id, ()))
            new = dict(metadata)
            if c.HEADER_CAPTION not in new and (c.HEADER_STREAM_TITLE in new or c.HEADER_STREAM_CATEGORY in new):
                merged.pop(c.HEADER_CAPTION, None)  # a caption wins over title and category: a newer title must not lose to an old caption
            merged.update(new)
            self.metadata[stream_id] = tuple((name, merged[name]) for name in c.METADATA_HEADERS if name in merged)
            self.metadata.move_to_end(stream_id)
            while len(self.metadata) > MAX_HELD_STREAMS * 5:
                self.metadata.popitem(last=False)

    def restore_metadata(self, stream_id: str, raw: str | None) -> None:
        """The metadata the stream hash kept (``F_METADATA``), for a stream this worker has not seen
        metadata of: producers may send it only on a broadcast's first segments, and a restart or
        a partition moving to another worker must not leave later evidence without its text."""
        if not raw or stream_id in self.metadata:
            return
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if isinstance(data, dict):
            self._note_metadata(stream_id, tuple((str(k), str(v)) for k, v in data.items() if k in c.METADATA_HEADERS))

    def _observe(self, stream_id: str, broadcast: str, pts_ms: int, score: float, ema: float, jpeg: bytes | None, origin: str) -> None:
        best = self.best.get(stream_id)
        if best is not None and (best.broadcast != broadcast or best.pts_ms < pts_ms - self.window_ms):
            del self.best[stream_id]  # a new broadcast, or the best frame left the window
            best = None
        if jpeg is not None and score >= self.settings.hold_above and (best is None or score > best.score):
            self.best[stream_id] = _Best(broadcast, pts_ms, score, ema, jpeg, origin)
            self.best.move_to_end(stream_id)
            while len(self.best) > MAX_HELD_STREAMS:
                self.best.popitem(last=False)

    def _store(self, stream_id: str, broadcast: str, pts_ms: int, score: float, ema: float, jpeg: bytes, kind: str, origin: str) -> str:
        if self.monotonic() < self._skip_until:
            raise EvidenceError("error", f"the evidence store failed less than {self.BREAK_S:.0f} s ago; evidence skipped until it is retried")
        metadata = dict(self.metadata.get(stream_id, ()))
        record = EvidenceRecord(evidence_id(stream_id, broadcast, pts_ms, origin), stream_id, broadcast, pts_ms, round(score, 6), round(ema, 6),
                                self.alert_on, self.model, int(self.clock() * 1000), kind, metadata, c.caption(metadata))
        try:
            self.store.put(record, jpeg)
        except EvidenceError:
            raise
        except Exception as exc:  # unreachable, timing out: skip the store for a while
            self._skip_until = self.monotonic() + self.BREAK_S
            # A written batch proves a refused or dropped connection is back, not that a store
            # that timed out answers in time now (slow Redis: scores in 5 s, evidence not in 2).
            self._skip_clears = "Timeout" not in type(exc).__name__
            raise EvidenceError("error", f"{exc.__class__.__name__}: {exc}") from exc
        self.counted("written", kind)
        return record.id

    def prepare(self, frames: Iterable[tuple[Any, bytes | None, tuple[tuple[str, str], ...], str]]) -> Prepared:
        """Evidence for one scored batch: ``frames`` are (FrameScore, JPEG or None, the message's
        metadata, the message's ``partition:offset``) in stream order. Called before the batch is
        written; a retried batch writes the same ids again. :meth:`commit` after the write keeps
        the near misses' cooldowns."""
        out = Prepared()
        for score, jpeg, metadata, origin in frames:
            self._note_metadata(score.stream_id, metadata)
            if metadata:
                out.metadata[score.stream_id] = json.dumps(dict(self.metadata[score.stream_id]), separators=(",", ":"), ensure_ascii=False)
            self._observe(score.stream_id, score.broadcast, score.pts_ms, score.score, score.ema, jpeg, origin)
            for event in score.events:
                if event.event != c.ALERT_RAISE:
                    continue
                event_id = f"{score.stream_id}/{event.broadcast}/{score.pts_ms}/{event.event}"
                out.alerts[event_id] = self._alert(score, jpeg, origin)
            if not score.alert and not score.events and not score.late:
                entry = self._near_miss(score, jpeg, out.cooldowns, origin)
                if entry is not None:
                    out.near_misses.append(entry)
                    out.cooldowns[score.stream_id] = (score.broadcast, score.pts_ms)
        return out

    def commit(self, prepared: Prepared) -> None:
        """The batch is written: its near misses start their streams' cooldowns; a store in the
        same Redis is reachable again (without this, a batch retried after a short outage went
        out without evidence for the rest of BREAK_S)."""
        if self.shares_scores_redis and self._skip_clears:
            self._skip_until = 0.0
        for stream_id, last in prepared.cooldowns.items():
            self.last_near_miss[stream_id] = last
            self.last_near_miss.move_to_end(stream_id)
        while len(self.last_near_miss) > MAX_HELD_STREAMS * 5:
            self.last_near_miss.popitem(last=False)

    def _alert(self, score: Any, jpeg: bytes | None, origin: str) -> dict[str, str]:
        ids: list[str] = []
        try:
            if jpeg is None:
                self.counted("failed", "no-frame")
            else:
                ids.append(self._store(score.stream_id, score.broadcast, score.pts_ms, score.score, score.ema, jpeg, KIND_TRIGGER, origin))
            best = self.best.get(score.stream_id)
            if best is not None and best.broadcast == score.broadcast and best.pts_ms != score.pts_ms:
                ids.append(self._store(score.stream_id, best.broadcast, best.pts_ms, best.score, best.ema, best.jpeg, KIND_BEST, best.origin))
        except EvidenceError as exc:
            self.counted("failed", exc.reason)
            log.warning("alert evidence not stored; the alert says why", stream=score.stream_id, error=str(exc))
            return {c.A_EVIDENCE: ",".join(ids), c.A_EVIDENCE_ERROR: str(exc)[:200]}
        if self.after_alert_evidence is not None and ids:
            self.after_alert_evidence()
        return {c.A_EVIDENCE: ",".join(ids)} if ids else {c.A_EVIDENCE_ERROR: "no frame: the decoder produced no evidence image"}

    def _near_miss(self, score: Any, jpeg: bytes | None, pending: dict[str, tuple[str, int]], origin: str) -> dict[str, str] | None:
        s = self.settings
        if jpeg is None or s.near_miss_margin <= 0 or s.near_miss_rate <= 0:
            return None
        if not self.alert_on - s.near_miss_margin <= score.ema < self.alert_on:
            return None
        last = pending.get(score.stream_id) or self.last_near_miss.get(score.stream_id)
        if last is not None and last[0] == score.broadcast and 0 < score.pts_ms - last[1] < s.near_miss_cooldown_s * 1000:
            return None
        event_id = f"{score.stream_id}/{score.broadcast}/{score.pts_ms}/near-miss"
        # Sampled by the frame's identity: a replay samples the same frames.
        if int(hashlib.sha256(event_id.encode()).hexdigest()[:8], 16) / 2**32 >= s.near_miss_rate:
            return None
        try:
            evidence = self._store(score.stream_id, score.broadcast, score.pts_ms, score.score, score.ema, jpeg, KIND_NEAR_MISS, origin)
        except EvidenceError as exc:  # a near miss without its picture is not worth a review
            self.counted("failed", exc.reason)
            return None
        self.counted("near-miss", "")
        return {c.N_STREAM: score.stream_id, c.N_BROADCAST: score.broadcast, c.N_PTS_MS: str(score.pts_ms),
                c.N_SCORE: f"{score.score:.6f}", c.N_EMA: f"{score.ema:.6f}", c.N_THRESHOLD: f"{self.alert_on:.6f}",
                c.N_MODEL: self.model, c.N_AT_MS: str(int(self.clock() * 1000)), c.N_EVIDENCE: evidence, c.N_EVENT_ID: event_id}
