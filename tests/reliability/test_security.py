"""Security settings: Redis ACL users and passwords (from files), Kafka SASL/TLS, secrets never
logged or printed, and no way for a message to make the worker open a file or a URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from framewatch.config import ConfigError, load_settings, redacted
from framewatch.devservices import DevServices, start_redis, stop_pid
from tests.integration.harness import Sandbox, WorkerProcess, clip, producer, send_segment, wait_for

pytestmark = pytest.mark.reliability

PASSWORD = "hunter2-is-not-a-password-7Qx"


def test_worker_with_a_redis_acl_user_and_a_password_file_never_logs_the_secret(
    services: DevServices, exported_model: Path, tmp_path: Path,
) -> None:
    # Only the ACL user may write, only under its prefix; the default user is off.
    acl = ("--user", "fw-worker", "on", f">{PASSWORD}", "~fwsec*", "+@all", "--user", "default", "off")
    server = start_redis(tmp_path / "acl-redis", extra_args=acl)
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")  # as Kubernetes and Docker secrets are mounted
    sandbox = Sandbox(services.kafka_bootstrap, f"redis://127.0.0.1:{server.port}/0")
    sandbox.create_topics()
    worker = WorkerProcess(sandbox, exported_model, tmp_path / "worker.log", FRAMEWATCH_REDIS__USERNAME="fw-worker",
                           FRAMEWATCH_REDIS__PASSWORD_FILE=str(secret), FRAMEWATCH_REDIS__PREFIX="fwsec", FRAMEWATCH_LOG_LEVEL="debug")
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        client = redis.Redis(port=server.port, username="fw-worker", password=PASSWORD)
        prod = producer(sandbox)
        send_segment(prod, sandbox, "secure-cam", clip(0, False), 0)
        prod.close()
        lane_keys = Sandbox(sandbox.bootstrap, sandbox.redis_url, name=sandbox.name)
        wait_for(lambda: client.xrange("fwsec:history:{secure-cam}"), 90, "scores written as the ACL user")
        assert lane_keys.prefix != "fwsec"  # the worker used the configured prefix, not the sandbox's
    finally:
        worker.stop()
        stop_pid(server.pid)
    assert PASSWORD not in worker.logs()


def test_secrets_from_files_env_and_urls_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sasl = tmp_path / "sasl"
    sasl.write_text("kafka-secret\n")
    monkeypatch.setenv("FRAMEWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FRAMEWATCH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FRAMEWATCH_KAFKA__SASL_USERNAME", "fw")
    monkeypatch.setenv("FRAMEWATCH_KAFKA__SASL_PASSWORD_FILE", str(sasl))
    monkeypatch.setenv("FRAMEWATCH_KAFKA__SSL_CAFILE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("FRAMEWATCH_REDIS__URL", "rediss://fw:url-secret@redis.internal:6380/0")
    settings = load_settings()
    kwargs = settings.kafka.client_kwargs()
    assert kwargs["sasl_plain_password"] == "kafka-secret" and kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512" and kwargs["ssl_cafile"] == str(tmp_path / "ca.pem")
    shown = str(redacted(settings))
    assert "kafka-secret" not in shown and "url-secret" not in shown and "rediss://fw:***@redis.internal:6380/0" in shown
    printed = subprocess.run([sys.executable, "-m", "framewatch.cli", "config", "show"], capture_output=True, text=True, check=True)
    assert "kafka-secret" not in printed.stdout and "url-secret" not in printed.stdout


def test_a_secret_file_and_an_inline_secret_together_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("a")
    monkeypatch.setenv("FRAMEWATCH_REDIS__PASSWORD", "b")
    monkeypatch.setenv("FRAMEWATCH_REDIS__PASSWORD_FILE", str(tmp_path / "pw"))
    with pytest.raises(ConfigError, match="password or password_file"):
        load_settings()
    monkeypatch.delenv("FRAMEWATCH_REDIS__PASSWORD")
    monkeypatch.setenv("FRAMEWATCH_REDIS__PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings()
