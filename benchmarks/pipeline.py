"""`framewatch bench pipeline` and `framewatch bench soak`: the worker measured against its limits.

One run of ``pipeline`` measures, on the same segments and the same model, for every sampling
policy (``grid``, ``keyframes``, ``adaptive``; worker/sampling.py), under ``policies``:

* ``decode_fps``  the decode pool alone (PyAV decode + sampling + resize), sampled frames/s;
* ``e2e_fps``     the real `framewatch worker` process from a Kafka backlog to Redis, commits included,
                  sampled frames/s between 10 % and 90 % of the backlog (start-up and tail excluded);
* ``peer_fps``    benchmarks/ffmpeg_peer.py (ffmpeg subprocesses, same engine and Redis) on the same backlog;
* ``streams_per_core`` the live streams of this video that ``e2e_fps`` keeps up with, per core;
* ``p50_latency_ms``/``p99_latency_ms`` a segment's production to its last score visible in Redis,
                  with segments produced at half of ``e2e_fps``;
* ``rss_mb``      the worker process's peak resident memory (its decode processes reported apart);
* ``detection_delay_s`` the stream time from a violent event's start to the alert (benchmarks/detection.py);

and once: ``infer_fps``, the engine alone at the worker's ``max_batch`` (and by batch size, plotted).
The top-level fields repeat the configured policy's (``decode.policy``, grid by default).

The workload is synthetic but shaped like live video: 1280×720 at 30 fps in 2-second H.264
MPEG-TS segments, one keyframe each, with film grain so the bitrate (~5 Mbps) and hence the
decode cost are those of camera content rather than of flat cartoons. Everything runs on the
embedded broker and Redis (`framewatch dev`), so absolute numbers include their CPU use on
the same cores; the ratios are what carry over between machines.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import math
import multiprocessing
import statistics
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis
from kafka import KafkaProducer

from framewatch.benchmarks.traffic import Sandbox, WorkerProcess, committed_offsets, end_offsets
from framewatch.config import FrameWatchSettings
from framewatch.engines import Engine, load
from framewatch.machine import describe, pyplot
from framewatch.worker import contracts
from framewatch.worker.decode import DecodeRequest, decode_request, decode_segment
from framewatch.worker.media import encode_segment
from framewatch.worker.sampling import POLICIES


@dataclass(frozen=True)
class Workload:
    streams: int = 8
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    segment_seconds: float = 2.0
    grain: float = 6.0  # σ of per-pixel noise, in levels of 255
    distinct_segments: int = 4  # encoded once, then sent many times under different streams and times


@dataclass(frozen=True)
class BenchSegment:
    payload: bytes
    content_type: str
    sampled_offsets_ms: tuple[int, ...]  # pts of the frames the worker samples, from the segment's start

    @property
    def sampled(self) -> int:
        return len(self.sampled_offsets_ms)


@dataclass
class Timeline:
    """Frames visible in Redis over time, and memory of the worker process tree."""

    points: list[tuple[float, int]] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    decoders_rss_mb: list[float] = field(default_factory=list)

    def rate_between(self, total: int, low: float = 0.1, high: float = 0.9) -> float:
        """Frames/s from the moment ``low`` of ``total`` was visible to the moment ``high`` was."""
        t_low = next((t for t, n in self.points if n >= low * total), None)
        t_high = next((t for t, n in self.points if n >= high * total), None)
        if t_low is None or t_high is None or t_high <= t_low:
            return 0.0
        return (high - low) * total / (t_high - t_low)


# --- the workload ------------------------------------------------------------------------

def synthetic_frames(seed: int, count: int, width: int, height: int, grain: float) -> list[np.ndarray]:
    """A moving scene: a slow colour gradient, three drifting blocks, fresh grain every frame."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    blocks = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-6, 6), rng.uniform(-4, 4), rng.integers(0, 256, 3))
              for _ in range(3)]
    frames = []
    for index in range(count):
        phase = index / max(count, 1)
        base = np.stack([(xs / width * 200 + 40 * phase), (ys / height * 180), np.full_like(xs, 90 + 60 * phase)], axis=-1)
        for x0, y0, dx, dy, colour in blocks:
            x, y = int(x0 + dx * index) % width, int(y0 + dy * index) % height
            base[y : y + height // 5, x : x + width // 6] = colour
        if grain > 0:
            base = base + rng.normal(0.0, grain, base.shape).astype(np.float32)
        frames.append(np.clip(base, 0, 255).astype(np.uint8))
    return frames


def make_segments(workload: Workload, request: Callable[[bytes, str, int], DecodeRequest]) -> list[BenchSegment]:
    count = round(workload.fps * workload.segment_seconds)
    out = []
    for seed in range(workload.distinct_segments):
        frames = synthetic_frames(seed, count, workload.width, workload.height, workload.grain)
        payload, content_type = encode_segment(frames, workload.fps, "mpegts", crf=23)
        sampled = decode_segment(request(payload, content_type, 0))
        out.append(BenchSegment(payload, content_type, tuple(f.pts_ms for f in sampled.frames)))
    return out


def decode_request_factory(settings: FrameWatchSettings, engine: Engine, segment_ms: int) -> Callable[[bytes, str, int], DecodeRequest]:
    """Decode requests as the worker builds them, for segments that declare their duration as the
    bench's producer does."""

    def request(payload: bytes, content_type: str, start_ms: int) -> DecodeRequest:
        return decode_request(settings.decode, engine, payload, content_type, start_ms, segment_ms)

    return request


# --- stages alone ------------------------------------------------------------------------

def measure_decode(segments: list[BenchSegment], request: Callable[[bytes, str, int], DecodeRequest], workers: int,
                   seconds: float) -> dict[str, float]:
    """The decode pool alone, kept full, as the worker runs it (spawned processes)."""
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(decode_segment, [request(s.payload, s.content_type, 0) for s in segments]))  # start-up, imports
        sampled = decoded = submitted = 0
        pending: set[cf.Future[Any]] = set()
        started = time.monotonic()
        while time.monotonic() - started < seconds or pending:
            while time.monotonic() - started < seconds and len(pending) < 2 * workers:
                seg = segments[submitted % len(segments)]
                pending.add(pool.submit(decode_segment, request(seg.payload, seg.content_type, 0)))
                submitted += 1
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                result = future.result()
                sampled += len(result.frames)
                decoded += result.decoded
        elapsed = time.monotonic() - started
    return {"decode_fps": sampled / elapsed, "decoded_fps": decoded / elapsed, "segments_per_second": submitted / elapsed}


def measure_infer(engine: Engine, batch_sizes: list[int], seconds_each: float) -> dict[int, float]:
    height, width = engine.input_size
    rng = np.random.default_rng(0)
    out = {}
    for batch in batch_sizes:
        frames = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
        for _ in range(3):
            engine.infer(frames)
        done, started = 0, time.monotonic()
        while time.monotonic() - started < seconds_each:
            engine.infer(frames)
            done += batch
        out[batch] = done / (time.monotonic() - started)
    return out


# --- the worker on a sandbox ----------------------------------------------------------------

def stream_frames(client: redis.Redis, keys: contracts.RedisKeys, streams: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.hget(keys.stream(stream), contracts.F_FRAMES)
    return sum(int(v) for v in pipe.execute() if v is not None)


def process_memory(pid: int) -> tuple[float, float]:
    """RSS in MiB of the process and, apart, of its children (the decode pool)."""
    try:
        proc = psutil.Process(pid)
        children = sum(c.memory_info().rss for c in proc.children(recursive=True))
        return proc.memory_info().rss / 2**20, children / 2**20
    except psutil.Error:
        return 0.0, 0.0


def send_nth_segment(producer: KafkaProducer, sandbox: Sandbox, segments: list[BenchSegment], streams: list[str], index: int,
                     segment_ms: int) -> tuple[str, BenchSegment, int, float]:
    """The ``index``-th segment of the round-robin over ``streams``, each stream's time advancing one
    segment per round; returns (stream, segment, its start ms, the wall-clock time it was produced)."""
    seg = segments[index % len(segments)]
    stream = streams[index % len(streams)]
    start_ms = (index // len(streams)) * segment_ms
    wall = time.time()
    headers = contracts.segment_headers(seg.content_type, segment_start_ms=start_ms, produced_at_ms=int(wall * 1000),
                                        segment_duration_ms=segment_ms)
    producer.send(sandbox.topic, key=stream.encode(), value=seg.payload, headers=headers)
    return stream, seg, start_ms, wall


def produce_backlog(producer: KafkaProducer, sandbox: Sandbox, segments: list[BenchSegment], streams: list[str], count: int,
                    segment_ms: int) -> int:
    """``count`` segments round-robin over ``streams``; returns the frames the worker will score."""
    frames = sum(send_nth_segment(producer, sandbox, segments, streams, index, segment_ms)[1].sampled for index in range(count))
    producer.flush()
    return frames


@dataclass
class PacedResult:
    latencies_ms: list[float]
    produced_at: list[float]  # monotonic seconds, one per latency
    unfinished: int
    rss: list[tuple[float, float, float]]  # (monotonic s, worker MiB, decoders MiB)


def run_paced(producer: KafkaProducer, client: redis.Redis, sandbox: Sandbox, segments: list[BenchSegment], streams: list[str],
              segments_per_second: float, seconds: float, pid: int, segment_ms: int, on_tick: Callable[[float], None] | None = None,
              memory_every_s: float = 1.0, last_pts: Callable[[BenchSegment], int] | None = None) -> PacedResult:
    """Produce at a fixed rate and time each segment from production until its last sampled frame's
    score is in Redis (the stream hash's pts_ms reaches it). ``last_pts`` gives that frame's offset
    in a segment (default: the grid's last sampled frame; key frames: the segment's first)."""
    pending: dict[str, deque[tuple[int, float, float]]] = {s: deque() for s in streams}  # (last pts, wall, mono)
    lock = threading.Lock()
    stop = threading.Event()

    def produce() -> None:
        started = time.monotonic()
        index = 0
        while not stop.is_set():
            due = started + index / segments_per_second
            if due - started > seconds:
                break
            stop.wait(max(0.0, due - time.monotonic()))
            with lock:  # registered before the watcher can see its score
                stream, seg, start_ms, wall = send_nth_segment(producer, sandbox, segments, streams, index, segment_ms)
                offset = last_pts(seg) if last_pts is not None else seg.sampled_offsets_ms[-1]
                pending[stream].append((start_ms + offset, wall, time.monotonic()))
            index += 1
        producer.flush()

    thread = threading.Thread(target=produce, name="paced-producer", daemon=True)
    thread.start()
    result = PacedResult([], [], 0, [])
    last_memory = 0.0
    deadline = time.monotonic() + seconds + 60
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.hget(sandbox.keys.stream(stream), contracts.F_PTS_MS)
        visible = pipe.execute()
        now_wall, now = time.time(), time.monotonic()
        with lock:
            for stream, pts in zip(streams, visible, strict=True):
                queue = pending[stream]
                while queue and pts is not None and int(pts) >= queue[0][0]:
                    _, wall, mono = queue.popleft()
                    result.latencies_ms.append((now_wall - wall) * 1000)
                    result.produced_at.append(mono)
            outstanding = sum(len(q) for q in pending.values())
        if now - last_memory >= memory_every_s:
            rss, children = process_memory(pid)
            result.rss.append((now, rss, children))
            last_memory = now
            if on_tick is not None:
                on_tick(now)
        if not thread.is_alive() and outstanding == 0:
            break
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=10)
    result.unfinished = sum(len(q) for q in pending.values())
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --- pipeline ----------------------------------------------------------------------------

@dataclass
class PipelineOptions:
    model: Path
    json_out: Path
    streams: int = 8
    seconds: float = 30.0
    backend: str = "auto"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    profile: Path | None = None  # py-spy flame graph of the worker at saturation (default policy)
    workload: Workload = field(default_factory=Workload)
    log_dir: Path | None = None
    progress: Callable[[str], None] = print
    policies: tuple[str, ...] = POLICIES
    peer: bool = True  # the ffmpeg-subprocess peer (benchmarks/ffmpeg_peer.py)
    naive: bool = False  # the naive worker (benchmarks/naive_worker.py), the first round's yardstick
    max_backlog_segments: int = 1200  # ~0.7 GB of 720p segments: the broker stores the whole backlog
    evidence_repeats: int = 2  # evidence off/on pairs on the default policy (0 = skip the evidence cost)


def worker_env(settings: FrameWatchSettings) -> dict[str, str]:
    """The bench's settings for the worker process, passed the way operators pass them."""
    return {
        "FRAMEWATCH_BATCH__MAX_BATCH": str(settings.batch.max_batch),
        "FRAMEWATCH_BATCH__MAX_DELAY_MS": str(settings.batch.max_delay_ms),
        "FRAMEWATCH_DECODE__WORKERS": str(settings.decode.workers),
        "FRAMEWATCH_DECODE__POLICY": settings.decode.policy,
        "FRAMEWATCH_DECODE__WATCH_ON": str(settings.decode.watch_on),
        "FRAMEWATCH_DECODE__WATCH_OFF": str(settings.decode.watch_off),
        "FRAMEWATCH_DECODE__SAMPLE_FPS": str(settings.decode.sample_fps),
        "FRAMEWATCH_SCORING__EMA_HALF_LIFE_S": str(settings.scoring.ema_half_life_s),
        "FRAMEWATCH_SCORING__ALERT_ON": str(settings.scoring.alert_on),
        "FRAMEWATCH_SCORING__ALERT_OFF": str(settings.scoring.alert_off),
        "FRAMEWATCH_BACKEND": settings.backend,
        "FRAMEWATCH_INTRA_OP_THREADS": str(settings.intra_op_threads),
        "FRAMEWATCH_LOG_LEVEL": "warning",
    }


def watch_until(client: redis.Redis, sandbox: Sandbox, streams: list[str], total: int | None, pid: int, timeout_s: float,
                on_first_frames: Callable[[], None] | None = None) -> tuple[Timeline, bool]:
    """Frames visible in Redis over time, and the worker's memory, until ``total`` frames are in
    Redis — or, with ``total`` None (the adaptive policy decides the count per segment), until every
    offset is committed. Returns the timeline and whether the backlog was finished (not: the
    worker died or the time ran out)."""
    timeline = Timeline()
    ends = end_offsets(sandbox) if total is None else None
    started = last_check = time.monotonic()
    last_memory = 0.0
    while time.monotonic() - started < timeout_s and psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        now = time.monotonic()
        seen = stream_frames(client, sandbox.keys, streams)
        if seen and on_first_frames is not None and (not timeline.points or timeline.points[-1][1] == 0):
            on_first_frames()
        timeline.points.append((now, seen))
        if now - last_memory > 0.5:
            rss, children = process_memory(pid)
            timeline.rss_mb.append(rss)
            timeline.decoders_rss_mb.append(children)
            last_memory = now
        if total is not None and seen >= total:
            return timeline, True
        if ends is not None and now - last_check > 0.5:
            last_check = now
            if committed_offsets(sandbox) == ends:
                timeline.points.append((time.monotonic(), stream_frames(client, sandbox.keys, streams)))
                return timeline, True
        time.sleep(0.05)
    return timeline, False


def bench_pipeline(options: PipelineOptions, settings: FrameWatchSettings) -> dict[str, Any]:
    """Every policy of ``options.policies`` measured in one run; the top-level fields are those of
    ``settings.decode.policy`` (the configured default), as before policies existed."""
    from framewatch.devservices import running_services

    say = options.progress
    w = options.workload
    engine = load(options.model, options.backend, intra_op_threads=settings.intra_op_threads)
    segment_ms = round(w.segment_seconds * 1000)
    sizes = sorted({b for b in options.batch_sizes if b <= settings.batch.max_batch} | {settings.batch.max_batch})
    say(f"engine alone, batch sizes {sizes}")
    by_batch = measure_infer(engine, sizes, seconds_each=max(1.0, options.seconds / 15))
    infer_fps = by_batch[settings.batch.max_batch]
    say(f"encoding {w.distinct_segments} distinct {w.width}×{w.height} {w.fps:g} fps segments of {w.segment_seconds:g} s")
    grid_request = decode_request_factory(settings.model_copy(update={"decode": settings.decode.model_copy(update={"policy": "grid"})}),
                                          engine, segment_ms)
    segments = make_segments(w, grid_request)
    bitrate = statistics.mean(len(s.payload) for s in segments) * 8 / w.segment_seconds / 1e6
    log_dir = options.log_dir or options.json_out.parent / f"{options.json_out.stem}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    policies: dict[str, dict[str, Any]] = {}
    default = settings.decode.policy if settings.decode.policy in options.policies else options.policies[0]
    with running_services() as services:
        for policy in options.policies:
            policy_settings = settings.model_copy(update={"decode": settings.decode.model_copy(update={"policy": policy, "keyframes_only": False})})
            policies[policy] = measure_policy(policy, options, policy_settings, engine, segments, infer_fps, services, log_dir,
                                              profile=options.profile if policy == default else None)
        evidence = measure_evidence_cost(options, settings.model_copy(update={"decode": settings.decode.model_copy(
            update={"policy": default, "keyframes_only": False})}), segments, services, log_dir, policies[default]) if options.evidence_repeats else None
    top = policies[default]
    cores = describe()["cores"]
    result: dict[str, Any] = {
        "decode_fps": top["decode_fps"],
        "infer_fps": round(infer_fps, 2),
        "e2e_fps": top["e2e_fps"],
        "naive_fps": top.get("naive_fps"),
        "peer_fps": top.get("peer_fps"),
        "p50_latency_ms": top["p50_latency_ms"],
        "p99_latency_ms": top["p99_latency_ms"],
        "rss_mb": top["rss_mb"],
        "policy": default,
        "machine": describe(),
        "backend": engine.backend,
        "model": {"name": engine.name, "path": str(options.model), "input_size": list(engine.input_size)},
        "batch": {"max_batch": settings.batch.max_batch, "max_delay_ms": settings.batch.max_delay_ms,
                  "decode_workers": settings.decode.workers, "sample_fps": settings.decode.sample_fps},
        "workload": {**asdict(w), "streams": options.streams, "bitrate_mbps": round(bitrate, 2), **top["workload"]},
        "derived": top["derived"],
        "goals": {
            "e2e_at_least_0.90_of_bound_every_policy": all(p["derived"]["e2e_over_bound"] >= 0.90 for p in policies.values()),
            "keyframes_6x_streams_per_core_of_grid": bool("keyframes" in policies and "grid" in policies
                                                          and policies["keyframes"]["streams_per_core"] >= 6 * policies["grid"]["streams_per_core"]),
            "e2e_at_least_1.3x_peer_every_policy": all(bool(p.get("peer_fps")) and p["e2e_fps"] >= 1.3 * p["peer_fps"] for p in policies.values()),
            "p99_within_segment_plus_1s_every_policy": all(p["p99_latency_ms"] <= segment_ms + 1000 for p in policies.values()),
            "evidence_on_within_5pct_of_off": bool(evidence and evidence["on_over_off"] >= 0.95),
        },
        "evidence": evidence,
        "policies": policies,
        "cores": cores,
        "throughput_by_batch": {str(b): round(v, 1) for b, v in by_batch.items()},
    }
    options.json_out.parent.mkdir(parents=True, exist_ok=True)
    options.json_out.write_text(json.dumps(result, indent=2) + "\n")
    plot_pipeline(result, options.json_out.with_suffix(".png"))
    return result


def measure_evidence_cost(options: PipelineOptions, settings: FrameWatchSettings, segments: list[BenchSegment], services: Any,
                          log_dir: Path, measured: dict[str, Any]) -> dict[str, Any]:
    """The worker at saturation with evidence off (``evidence.backend: none``) and on (``redis``, the
    default: every sampled frame encoded as a JPEG in the decode processes, alerts' frames stored),
    alternated ``evidence_repeats`` times on the same backlog size, so the machine's drift hits both.
    The alert threshold is lowered so that every stream raises an alert and its evidence is written."""
    say = options.progress
    w = options.workload
    segment_ms = round(w.segment_seconds * 1000)
    per_segment = max(measured["workload"]["scored_frames_per_segment"], 1e-9)
    count = min(options.max_backlog_segments, max(options.streams * 2, math.ceil(measured["e2e_fps"] * options.seconds / per_segment)))
    runs: dict[str, list[float]] = {"none": [], "redis": []}
    for repeat in range(options.evidence_repeats):
        for backend in ("none", "redis") if repeat % 2 == 0 else ("redis", "none"):
            sandbox = Sandbox(services.kafka_bootstrap, services.redis_url, partitions=max(options.streams, 1), name=f"ev{uuid.uuid4().hex[:8]}")
            sandbox.create_topics()
            streams = [f"bench-{i}" for i in range(options.streams)]
            client = redis.Redis.from_url(services.redis_url)
            producer = KafkaProducer(bootstrap_servers=sandbox.bootstrap, acks="all", linger_ms=5, max_request_size=settings.decode.max_message_bytes)
            try:
                say(f"[evidence {backend}, run {repeat + 1}/{options.evidence_repeats}] backlog of {count} segments")
                produce_backlog(producer, sandbox, segments, streams, count, segment_ms)
                env = {**worker_env(settings), "FRAMEWATCH_EVIDENCE__BACKEND": backend, "FRAMEWATCH_SCORING__ALERT_ON": "0.001",
                       "FRAMEWATCH_SCORING__ALERT_OFF": "0.0005"}
                worker = WorkerProcess(sandbox, options.model, log_dir / f"worker-evidence-{backend}-{repeat}.log", extra_env=env)
                try:
                    timeline, _ = watch_until(client, sandbox, streams, None, worker.process.pid, options.seconds * 20 + 120)
                finally:
                    worker.stop()
                scored = timeline.points[-1][1] if timeline.points else 0
                runs[backend].append(round(timeline.rate_between(scored), 2))
            finally:
                producer.close()
                client.close()
    off, on = statistics.mean(runs["none"]), statistics.mean(runs["redis"])
    return {"policy": settings.decode.policy, "backlog_segments": count, "off_fps": runs["none"], "on_fps": runs["redis"],
            "on_over_off": round(on / off, 3) if off else 0.0, "long_side": settings.evidence.long_side}


def measure_policy(policy: str, options: PipelineOptions, settings: FrameWatchSettings, engine: Engine, segments: list[BenchSegment],
                   infer_fps: float, services: Any, log_dir: Path, profile: Path | None = None) -> dict[str, Any]:
    """One policy: the decode pool alone, the worker from a backlog, latency at half load, the peer(s)."""

    say = options.progress
    w = options.workload
    segment_ms = round(w.segment_seconds * 1000)
    request = decode_request_factory(settings, engine, segment_ms)
    # What one segment yields under this policy (adaptive: keyframes while calm; measured below).
    sampled = [len(decode_segment(request(s.payload, s.content_type, 0)).frames) for s in segments]
    per_segment = statistics.mean(sampled)
    say(f"[{policy}] decode pool alone ({settings.decode.workers} processes, {options.seconds / 3:.0f} s)")
    decode = measure_decode(segments, request, settings.decode.workers, options.seconds / 3)
    bound = 1.0 / (1.0 / decode["decode_fps"] + 1.0 / infer_fps)
    sandbox = Sandbox(services.kafka_bootstrap, services.redis_url, partitions=max(options.streams, 1), name=f"{policy[:4]}{uuid.uuid4().hex[:6]}")
    sandbox.create_topics()
    with contextlib.ExitStack() as stack:
        client = redis.Redis.from_url(services.redis_url)
        stack.callback(client.close)
        producer = KafkaProducer(bootstrap_servers=sandbox.bootstrap, acks="all", linger_ms=5, max_request_size=settings.decode.max_message_bytes)
        stack.callback(producer.close)
        return _measure_policy(policy, options, settings, engine, segments, services, log_dir, profile, sandbox, client, producer,
                               decode, bound, per_segment)


def _measure_policy(policy: str, options: PipelineOptions, settings: FrameWatchSettings, engine: Engine, segments: list[BenchSegment],
                    services: Any, log_dir: Path, profile: Path | None, sandbox: Sandbox, client: redis.Redis, producer: KafkaProducer,
                    decode: dict[str, float], bound: float, per_segment: float) -> dict[str, Any]:
    from framewatch.benchmarks.detection import detection_delay
    from framewatch.benchmarks.ffmpeg_peer import FFMPEG_MISSING, ffmpeg_binary, run_ffmpeg_peer
    from framewatch.benchmarks.naive_worker import run_naive_worker

    say = options.progress
    w = options.workload
    segment_ms = round(w.segment_seconds * 1000)
    backlog_streams = [f"bench-{i}" for i in range(options.streams)]
    count = min(options.max_backlog_segments, max(options.streams * 2, math.ceil(bound * options.seconds / max(per_segment, 1))))
    say(f"[{policy}] backlog: {count} segments over {options.streams} streams")
    produce_backlog(producer, sandbox, segments, backlog_streams, count, segment_ms)
    worker = WorkerProcess(sandbox, options.model, log_dir / f"worker-{policy}.log", extra_env=worker_env(settings))
    profiler: subprocess.Popen[bytes] | None = None
    try:
        say(f"[{policy}] worker at saturation")
        profilers: list[subprocess.Popen[bytes] | None] = []

        def start_profile() -> None:
            if profile is not None:
                profilers.append(start_profiler(worker.process.pid, profile, options.seconds / 2))

        timeline, complete = watch_until(client, sandbox, backlog_streams, None, worker.process.pid, options.seconds * 20 + 120, start_profile)
        profiler = profilers[0] if profilers else None
        scored = timeline.points[-1][1] if timeline.points else 0
        e2e_fps = timeline.rate_between(scored)
        frames_per_segment = scored / count if count else 0.0
        half_rate = 0.5 * e2e_fps / max(frames_per_segment, 1e-9)
        say(f"[{policy}] latency at half load ({half_rate:.2f} segments/s for {options.seconds:.0f} s)")
        paced = run_paced(producer, client, sandbox, segments, [f"latency-{i}" for i in range(options.streams)], max(half_rate, 0.1),
                          options.seconds, worker.process.pid, segment_ms,
                          # a calm stream under keyframes/adaptive: its segment's key frame (at 0); the grid: its last cell
                          last_pts=lambda seg: seg.sampled_offsets_ms[0] if policy != "grid" else seg.sampled_offsets_ms[-1])
        rss_peak = max([*timeline.rss_mb, *(r for _, r, _ in paced.rss)], default=0.0)
        decoders_peak = max([*timeline.decoders_rss_mb, *(c for _, _, c in paced.rss)], default=0.0)
    finally:
        exit_code = worker.stop()  # first: a profiler that hangs must not leave the worker running
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=options.seconds + 60)
    consumer_kwargs = {"session_timeout_ms": 6000, "max_poll_interval_ms": 60000}
    peer_fps: float | None = None
    peer_note = None
    if options.peer:
        if ffmpeg_binary() is None:
            peer_note = FFMPEG_MISSING
            say(f"[{policy}] {FFMPEG_MISSING}")
        else:
            say(f"[{policy}] ffmpeg-subprocess peer on the same backlog ({options.seconds:.0f} s)")
            peer = run_ffmpeg_peer(engine, sandbox.bootstrap, sandbox.topic, f"peer-{sandbox.name}", services.redis_url, f"peer{sandbox.name}",
                                   options.seconds, settings.decode.policy, w.fps, w.segment_seconds, settings.decode.sample_fps,
                                   settings.decode.workers, (settings.decode.watch_on, settings.decode.watch_off),
                                   settings.scoring.ema_half_life_s, settings.batch.max_batch, consumer_kwargs=consumer_kwargs)
            peer_fps = round(peer.frames_per_second, 2)
    naive_fps = None
    if options.naive and policy == "grid":
        say(f"[{policy}] naive worker on the same backlog ({options.seconds:.0f} s)")
        naive = run_naive_worker(engine, sandbox.bootstrap, sandbox.topic, f"naive-{sandbox.name}", services.redis_url, f"naive{sandbox.name}",
                                 options.seconds, settings.decode.sample_fps, consumer_kwargs)
        naive_fps = round(naive.frames_per_second, 2)
    cores = describe()["cores"]
    stream_frames_per_second = frames_per_segment / w.segment_seconds  # sampled frames one live stream yields per second
    streams = e2e_fps / stream_frames_per_second if stream_frames_per_second else 0.0
    return {
        "decode_fps": round(decode["decode_fps"], 2),
        "e2e_fps": round(e2e_fps, 2),
        "peer_fps": peer_fps,
        "naive_fps": naive_fps,
        "streams_per_core": round(streams / cores, 2),
        "p50_latency_ms": round(percentile(paced.latencies_ms, 50), 1),
        "p99_latency_ms": round(percentile(paced.latencies_ms, 99), 1),
        "rss_mb": round(rss_peak, 1),
        "detection_delay_s": detection_delay(settings.decode.policy, segment_ms=segment_ms, keyframe_ms=segment_ms, decode=settings.decode,
                                             scoring=settings.scoring),
        "workload": {"sampled_frames_per_segment_decode_alone": round(per_segment, 3), "backlog_segments": count, "scored_frames": scored,
                     "scored_frames_per_segment": round(frames_per_segment, 3)},
        "derived": {
            "decoded_fps": round(decode["decoded_fps"], 1),
            "two_stage_bound_fps": round(bound, 2),
            "e2e_over_bound": round(e2e_fps / bound, 3) if bound else 0.0,
            "e2e_over_peer": round(e2e_fps / peer_fps, 2) if peer_fps else None,
            "peer_note": peer_note,
            "latency_goal_ms": segment_ms + 1000,
            "latency_samples": len(paced.latencies_ms),
            "latency_unfinished": paced.unfinished,
            "decoders_rss_mb": round(decoders_peak, 1),
            "live_streams": round(streams, 1),
            "worker_exit_code": exit_code,
            "backlog_complete": complete,
        },
    }


def wait_committed(sandbox: Sandbox, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    ends = end_offsets(sandbox)
    while time.monotonic() < deadline:
        if committed_offsets(sandbox) == ends:
            return True
        time.sleep(0.5)
    return False


def start_profiler(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy on the worker and its decode processes; None (and a note) when py-spy is missing."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "py-spy"  # a virtual environment that is not activated
    exe = str(beside) if beside.exists() else shutil.which("py-spy")
    if exe is None:
        print("py-spy is not installed (pip install py-spy): no profile")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = "speedscope" if out.suffix == ".json" else "flamegraph"
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--duration", str(max(5, int(seconds))), "--rate", "200",
                             "--format", fmt, "--output", str(out), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def plot_pipeline(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()

    sizes = [int(b) for b in result["throughput_by_batch"]]
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, 4.4))
    ax.plot(sizes, list(result["throughput_by_batch"].values()), marker="o", label="engine alone (infer)")
    for key, style, colour in (("decode_fps", "--", "tab:orange"), ("e2e_fps", "-", "tab:green"), ("peer_fps", ":", "tab:red")):
        if result.get(key):
            ax.axhline(result[key], linestyle=style, color=colour, label=f"{key} ({result['policy']}) {result[key]:.1f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("sampled frames per second")
    ax.set_title(f"{result['model']['name']} on {result['backend']}, {result['machine']['cores']} cores")
    ax.legend(fontsize=8)
    names = list(result["policies"])
    width = 0.25
    for offset, (key, label, colour) in enumerate((("decode_fps", "decode pool alone", "tab:orange"), ("e2e_fps", "framewatch end to end", "tab:green"),
                                                   ("peer_fps", "ffmpeg-subprocess peer", "tab:red"))):
        values = [result["policies"][n].get(key) or 0.0 for n in names]
        bars.bar([i + (offset - 1) * width for i in range(len(names))], values, width, label=label, color=colour)
    for i, name in enumerate(names):
        policy = result["policies"][name]
        bars.annotate(f"{policy['streams_per_core']:.0f} streams/core", (i, policy["e2e_fps"]), textcoords="offset points", xytext=(0, 4),
                      ha="center", fontsize=8)
    bars.set_xticks(range(len(names)), names)
    bars.set_ylabel("sampled frames per second")
    bars.set_title("per sampling policy (one run)")
    bars.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
