"""The embedded broker and Redis are real servers; the group protocol and offsets behave like Kafka's."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer

from framewatch.devservices import DevServices, pid_alive, read_state
from tests.conftest import FAST_GROUP, create_topic

pytestmark = pytest.mark.integration


def _consumer(services: DevServices, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic, bootstrap_servers=services.kafka_bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", consumer_timeout_ms=4000, **FAST_GROUP,
    )


def test_broker_group_resumes_from_committed_offsets(services: DevServices, topic_name: str) -> None:
    create_topic(services.kafka_bootstrap, topic_name, partitions=4)
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    for i in range(100):
        producer.send(topic_name, key=f"stream-{i % 7}".encode(), value=f"v{i}".encode(),
                      headers=[("content-type", b"video/mp2t"), ("n", str(i).encode())])
    producer.flush()
    producer.close()

    group = f"g-{topic_name}"
    first = _consumer(services, topic_name, group)
    seen: list[int] = []
    for record in first:
        assert dict(record.headers)["content-type"] == b"video/mp2t"
        assert record.key.decode().startswith("stream-")
        seen.append(int(dict(record.headers)["n"]))
        if len(seen) == 60:
            first.commit()
            break
    first.close(autocommit=False)
    # The 60 committed records must not come back; the other 40 must, and only once.
    second = _consumer(services, topic_name, group)
    rest = [int(dict(r.headers)["n"]) for r in second]
    second.commit()
    second.close(autocommit=False)
    assert len(seen) == 60
    assert sorted(seen + rest) == list(range(100)), "a record was lost or read twice across the restart"


def test_redis_answers_over_tcp(services: DevServices) -> None:
    client = redis.Redis.from_url(services.redis_url)
    assert client.ping() is True
    client.set("framewatch-test", "1")
    assert client.get("framewatch-test") == b"1"
    with socket.create_connection((services.redis.host, services.redis.port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16) == b"+PONG\r\n"


def test_dev_up_and_down_leave_no_process(tmp_path: Path) -> None:
    env_cmd = [sys.executable, "-m", "framewatch.cli", "dev"]
    up = subprocess.run([*env_cmd, "up", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=True)
    lines = dict(line.split("=", 1) for line in up.stdout.strip().splitlines())
    assert set(lines) == {"KAFKA_BOOTSTRAP", "REDIS_URL"}
    state = read_state(tmp_path)
    assert state is not None and state.kafka.alive() and state.redis.alive()
    assert redis.Redis.from_url(lines["REDIS_URL"]).ping()
    # A second `up` reuses the running pair instead of starting another.
    again = subprocess.run([*env_cmd, "up", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=True)
    assert again.stdout == up.stdout
    status = subprocess.run([*env_cmd, "status", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert status.returncode == 0 and "running" in status.stdout
    subprocess.run([*env_cmd, "down", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=True)
    assert not pid_alive(state.kafka.pid)
    assert not pid_alive(state.redis.pid)
    assert read_state(tmp_path) is None
