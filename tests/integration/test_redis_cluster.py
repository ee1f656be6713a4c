"""The worker on Redis Cluster: a one-node Valkey cluster holding all 16384 slots, so every batch
spans many slots (per-stream hash tags, global alert and ranking keys) as it would on a real one."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from framewatch.devservices import DevServices, stop_pid
from framewatch.worker.redis_io import Scores
from tests.integration.harness import (
    Sandbox,
    WorkerProcess,
    clip,
    producer,
    send_segment,
    start_cluster,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_worker_scores_into_redis_cluster(services: DevServices, exported_model: Path, tmp_path: Path) -> None:
    server = start_cluster(tmp_path / "cluster", masters=1)[0]
    try:
        sandbox = Sandbox(services.kafka_bootstrap, f"redis://127.0.0.1:{server.port}/0")
        sandbox.create_topics()
        prod = producer(sandbox)
        streams = [f"cl-{i}" for i in range(4)]
        for i, stream in enumerate(streams):
            send_segment(prod, sandbox, stream, clip(i, violent=i % 2 == 0), 0)
        prod.close()
        worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_REDIS__CLUSTER="true")
        try:
            scores = Scores(redis.cluster.RedisCluster(host="127.0.0.1", port=server.port), sandbox.prefix)
            wait_for(lambda: len(scores.top(10)) == 4, 90, "every stream ranked")
            assert all(len(scores.history(s)) == 2 for s in streams)
        finally:
            worker.stop()
        assert "CROSSSLOT" not in worker.logs()
    finally:
        stop_pid(server.pid)
