"""The naive worker: how a first attempt at this service is usually written.

It exists only as the yardstick of `framewatch bench pipeline` (``naive_fps``): one message at
a time, every frame decoded and converted to a full-size RGB array, the 1-fps sample taken in
Python and resized with PIL, the model called on one frame at a time, and one Redis write and
one Kafka commit per frame. It scores the same frames as the real worker, so the two rates
compare directly. Never deploy it.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import av
import numpy as np
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from PIL import Image

from framewatch.engines.base import Engine
from framewatch.worker import contracts


@dataclass
class ConsumerRun:
    """What a competing consumer scored, and in how long (the naive worker, the ffmpeg peer)."""

    frames: int
    messages: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_naive_worker(engine: Engine, bootstrap: str, topic: str, group: str, redis_url: str, prefix: str,
                     seconds: float, sample_fps: float = 1.0, consumer_kwargs: dict[str, int] | None = None) -> ConsumerRun:
    """Consume ``topic`` for ``seconds`` (from the first message) and return what was scored."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_records=1, **(consumer_kwargs or {}))
    client = redis.Redis.from_url(redis_url)
    keys = contracts.RedisKeys(prefix)
    height, width = engine.input_size
    frames = messages = 0
    started: float | None = None
    try:
        while started is None or time.monotonic() - started < seconds:
            polled = consumer.poll(timeout_ms=100)
            for tp, records in polled.items():
                for record in records:
                    if started is None:
                        started = time.monotonic()
                    stream_id = (record.key or b"").decode("utf-8", "replace")
                    headers = contracts.header_map(record.headers)
                    start_ms = int(headers.get(contracts.HEADER_SEGMENT_START_MS, b"0") or 0)
                    period_ms = 1000.0 / sample_fps
                    last_cell = None
                    with av.open(io.BytesIO(record.value), mode="r") as container:
                        for frame in container.decode(video=0):
                            rgb = frame.to_ndarray(format="rgb24")  # every frame, full size
                            pts_ms = start_ms + round((frame.time or 0.0) * 1000)
                            cell = int(pts_ms // period_ms)
                            if cell == last_cell:
                                continue
                            last_cell = cell
                            small = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))
                            score = float(engine.infer(small[None])[0, engine.violent_index])
                            client.hset(keys.stream(stream_id), mapping={contracts.F_SCORE: f"{score:.6f}", contracts.F_PTS_MS: pts_ms})
                            consumer.commit({TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(record.offset + 1, "", -1)})
                            frames += 1
                    messages += 1
    finally:
        consumer.close(autocommit=False)
        client.close()
    return ConsumerRun(frames, messages, time.monotonic() - started if started is not None else 0.0)
