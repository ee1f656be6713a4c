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
        # Every stream raises an alert: its evidence goes to the cluster too (one hash tag, one slot).
        worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_REDIS__CLUSTER="true",
                               FRAMEWATCH_SCORING__ALERT_ON="0.0001", FRAMEWATCH_SCORING__ALERT_OFF="0.00005")
        cluster = redis.cluster.RedisCluster(host="127.0.0.1", port=server.port)
        try:
            scores = Scores(cluster, sandbox.prefix)
            wait_for(lambda: len(scores.top(10)) == 4, 90, "every stream ranked")
            assert all(len(scores.history(s)) == 2 for s in streams)
            wait_for(lambda: len({a["stream"] for a in scores.alerts()}) == 4, 30, "every stream's alert")
        finally:
            worker.stop()
        assert "CROSSSLOT" not in worker.logs() and "evidence not stored" not in worker.logs()
        # The review side on the cluster: evidence read back, a decision (a script), hold and release (scripts).
        from framewatch.config import EvidenceSettings, RedisSettings
        from framewatch.dashboard.review import Review
        from framewatch.worker.evidence import open_store

        store = open_store(EvidenceSettings(prefix=f"{sandbox.prefix}:evidence"), RedisSettings(url=sandbox.redis_url, cluster=True))
        review = Review(cluster, sandbox.prefix, store)
        queue = review.queue("ana")
        assert len(queue) == 4 and all(item.evidence for item in queue)
        assert all(store.get(e) is not None for item in queue for e in item.evidence)  # type: ignore[union-attr]
        review.decide(queue[0], "ana", "violent")
        assert cluster.scard(f"{sandbox.prefix}:evidence:{{ev}}:held") == len(queue[0].evidence)
        assert review.queue("ana")[0].event_id != queue[0].event_id and cluster.xlen(sandbox.keys.feedback) == 1
        store.release(queue[0].evidence)  # type: ignore[union-attr]
        assert cluster.scard(f"{sandbox.prefix}:evidence:{{ev}}:held") == 0
    finally:
        stop_pid(server.pid)
