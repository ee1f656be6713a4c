"""The peer: what a competent engineer writes instead of framewatch, measured on the same backlog.

One ``ffmpeg`` subprocess per segment (Debian's binary), as many at once as there are decode
workers, each piping raw RGB frames at the model's input size (``-vf select…,scale`` with
bilinear scaling, ``-frames:v`` so decoding stops after the last sampled frame, ``-skip_frame
nokey`` for key frames only); each poll takes enough segments for about ``max_batch`` frames,
whose frames go to the same engine in one call, the scores to Redis in one pipeline, and the
offsets are committed after each batch. Its rate counts the time it was busy: it stops when the
backlog that was there when it started is done.
The sampling is the worker's: the grid's frames (the first of every 1/``sample_fps`` second of a
segment that starts on a second), key frames, or per stream the adaptive choice from an EMA with
the worker's half-life and watch levels. What it leaves out is what framewatch adds: no
dead-letter queue, no replay guard, no alerts, no backpressure, no fault handling.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import shutil
import subprocess
import time
from typing import Any

import numpy as np
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from framewatch.benchmarks.naive_worker import ConsumerRun
from framewatch.engines.base import Engine
from framewatch.worker import contracts
from framewatch.worker.sampling import Policy, Sampler

FFMPEG_MISSING = "ffmpeg is not installed (Debian: apt-get install ffmpeg): the peer was not measured"


def ffmpeg_binary() -> str | None:
    return shutil.which("ffmpeg")


SWS_FLAGS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "neighbor"}


def ffmpeg_command(binary: str, width: int, height: int, keyframes: bool, fps: float, sample_fps: float, segment_s: float,
                   interpolation: str = "bilinear") -> tuple[list[str], int]:
    """The command for one MPEG-TS segment on stdin, and how many frames it outputs at most."""
    scale = f"scale={width}:{height}:flags={SWS_FLAGS.get(interpolation, 'bilinear')}"
    frames = max(1, math.ceil(segment_s * sample_fps))  # both policies take at most one frame per 1/sample_fps s
    if keyframes:
        # the first key frame of each 1/sample_fps s, as the worker caps them
        select = f"select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{1 / sample_fps - 0.001:.3f})',{scale}"
        pre = ["-skip_frame", "nokey"]
    else:
        every = max(1, round(fps / sample_fps))
        select = f"select='not(mod(n\\,{every}))',{scale}"
        pre = []
    command = [binary, "-hide_banner", "-loglevel", "error", "-threads", "1", *pre, "-f", "mpegts", "-i", "pipe:0",
               "-vf", select, "-fps_mode", "passthrough", "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    return command, frames


def decode_with_ffmpeg(command: list[str], payload: bytes, width: int, height: int) -> np.ndarray:
    done = subprocess.run(command, input=payload, capture_output=True, timeout=60, check=False)
    size = width * height * 3
    usable = len(done.stdout) // size * size
    return np.frombuffer(done.stdout[:usable], dtype=np.uint8).reshape(-1, height, width, 3)


def run_ffmpeg_peer(engine: Engine, bootstrap: str, topic: str, group: str, redis_url: str, prefix: str, seconds: float,
                    policy: Policy, fps: float, segment_s: float, sample_fps: float = 1.0, workers: int = 2,
                    watch: tuple[float, float] = (0.35, 0.25), half_life_s: float = 10.0, max_batch: int = 32,
                    consumer_kwargs: dict[str, Any] | None = None) -> ConsumerRun:
    """Consume ``topic`` from the start for up to ``seconds`` (from the first record), or until the
    backlog that was there at the start is done; the rate is over the time it was busy."""
    binary = ffmpeg_binary()
    if binary is None:
        raise FileNotFoundError(FFMPEG_MISSING)
    height, width = engine.input_size
    interpolation = getattr(engine, "interpolation", "bilinear")
    frames_per_segment = max(1, math.ceil(segment_s * sample_fps))
    # Enough segments a poll for about max_batch frames an engine call, and the decoders kept busy.
    records_per_poll = max(2 * workers, max_batch // (1 if policy != "grid" else frames_per_segment))
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=records_per_poll, fetch_max_bytes=64 << 20, max_partition_fetch_bytes=32 << 20,
                             **(consumer_kwargs or {}))
    client = redis.Redis.from_url(redis_url)
    keys = contracts.RedisKeys(prefix)
    sampler = Sampler(policy, *watch)
    ema: dict[str, float] = {}
    frames = messages = 0
    started: float | None = None
    finished = time.monotonic()
    deadline = time.monotonic() + seconds + 120  # no record at all: give up
    ends: dict[TopicPartition, int] | None = None
    done: dict[TopicPartition, int] = {}
    pool = cf.ThreadPoolExecutor(max_workers=workers)
    try:
        while time.monotonic() < deadline and (started is None or time.monotonic() - started < seconds):
            polled = consumer.poll(timeout_ms=200)
            if ends is None and consumer.assignment():
                ends = {tp: offset for tp, offset in consumer.end_offsets(list(consumer.assignment())).items() if offset > 0}
            records = [(tp, r) for tp, batch in polled.items() for r in batch]
            if not records:
                if ends is not None and started is not None and all(done.get(tp, 0) >= end for tp, end in ends.items()):
                    break  # the backlog is done: idle time is not the peer's
                continue
            if started is None:
                started = time.monotonic()
            jobs = []
            for _, record in records:
                stream = (record.key or b"").decode("utf-8", "replace")
                keyframes = sampler.keyframes_only(stream, ema.get(stream))
                command, _ = ffmpeg_command(binary, width, height, keyframes, fps, sample_fps, segment_s, interpolation)
                jobs.append((stream, record, pool.submit(decode_with_ffmpeg, command, record.value, width, height)))
            decoded = [(stream, record, job.result()) for stream, record, job in jobs]
            batch = [pixels for *_, pixels in decoded if len(pixels)]
            if batch:
                scores = engine.infer(np.concatenate(batch))[:, engine.violent_index]
            pipe = client.pipeline(transaction=False)
            position = 0
            for (stream, record, pixels), (tp, _) in zip(decoded, records, strict=True):
                start_ms = int(contracts.header_map(record.headers).get(contracts.HEADER_SEGMENT_START_MS, b"0") or 0)
                step_ms = segment_s * 1000 / max(len(pixels), 1)
                for i in range(len(pixels)):
                    score = float(scores[position])
                    position += 1
                    previous = ema.get(stream)
                    ema[stream] = score if previous is None else previous + (1 - 0.5 ** (step_ms / 1000 / half_life_s)) * (score - previous)
                    pipe.hset(keys.stream(stream), mapping={contracts.F_SCORE: f"{score:.6f}", contracts.F_PTS_MS: start_ms + round(i * step_ms)})
                frames += len(pixels)
                messages += 1
                done[TopicPartition(tp.topic, tp.partition)] = record.offset + 1
            pipe.execute()
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in done.items()})
            finished = time.monotonic()
    finally:
        pool.shutdown(wait=True)
        consumer.close(autocommit=False)
        client.close()
    return ConsumerRun(frames, messages, finished - started if started is not None else 0.0)
