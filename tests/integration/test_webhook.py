"""`framewatch webhook` against real Redis and a real HTTP receiver: signed, in order, retried on
5xx and silence, given up into the failed stream on a refusal, resumed after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from framewatch.dashboard.webhook import verify
from framewatch.devservices import free_port
from framewatch.worker import contracts as c
from framewatch.worker.redis_io import alert_event_fields

SECRET = b"a shared secret of 32 bytes......"


class Receiver:
    """A webhook receiver that answers from a script of statuses (then 200) and keeps what it got."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.got: list[tuple[int, dict[str, Any], bool, str]] = []  # (status answered, payload, signature ok, event id)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.script.pop(0) if receiver.script else 200
                ok = verify(SECRET, body, self.headers.get("X-Framewatch-Signature", ""))
                receiver.got.append((status, json.loads(body), ok, self.headers.get("X-Framewatch-Event-Id", "")))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def _run(redis_url: str, prefix: str, url: str, secret: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FRAMEWATCH_")}, "FRAMEWATCH_REDIS__PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "framewatch.cli", "webhook", "--url", url, "--secret-file", str(secret), "--redis-url",
                           redis_url, "--once", "--dashboard-url", "http://review.local", *extra], env=env, capture_output=True, text=True,
                          timeout=120)


def test_alert_events_are_signed_retried_and_resumed(services: Any, tmp_path: Path) -> None:
    client = redis.Redis.from_url(services.redis_url)
    prefix = f"wh{time.time_ns()}"
    keys = c.RedisKeys(prefix)
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)

    def alert(stream: str, event: str, pts: int, evidence: str = "") -> None:
        fields = alert_event_fields(stream, event, "ema-above-alert-on", 0.9, pts, "1", "m", int(time.time() * 1000), 0.7, 0.95)
        if evidence:
            fields[c.A_EVIDENCE] = evidence
        client.xadd(keys.alerts, fields)

    alert("old", "raise", 0)  # before the first run: not replayed
    first = _run(services.redis_url, prefix, "http://127.0.0.1:1/nobody", secret)  # sets the cursor at the newest event
    assert first.returncode == 0, first.stderr
    receiver = Receiver([500, 503])  # two failures, then accepted
    alert("cam-1", "raise", 1000, "a" * 32)
    alert("cam-1", "clear", 5000)
    done = _run(services.redis_url, prefix, receiver.url, secret)
    assert done.returncode == 0, done.stderr
    assert [(status, p["type"]) for status, p, _, _ in receiver.got] == [(500, "alert.raise"), (503, "alert.raise"), (200, "alert.raise"),
                                                                         (200, "alert.clear")]
    assert all(ok for _, _, ok, _ in receiver.got), "a signature did not verify"
    assert receiver.got[2][3] == "cam-1/1/1000/raise" and receiver.got[2][1]["evidence_urls"] == [f"http://review.local/evidence/{'a' * 32}"]
    assert not verify(b"another secret of 32 bytes.......", json.dumps(receiver.got[2][1]).encode(), "t=1,v1=00")
    # A receiver that refuses (400) is not retried: the event goes to the failed stream; the next one is sent.
    refusing = Receiver([400])
    alert("cam-2", "raise", 0)
    alert("cam-3", "raise", 0)
    again = _run(services.redis_url, prefix, refusing.url, secret)
    assert again.returncode == 0, again.stderr
    assert [(status, p["event"]["stream"]) for status, p, _, _ in refusing.got] == [(400, "cam-2"), (200, "cam-3")]
    failed = client.xrange(f"{prefix}:webhook:default:failed")
    assert len(failed) == 1 and failed[0][1][b"status"] == b"400" and json.loads(failed[0][1][b"event"])["stream"] == "cam-2"
    # Nothing new: nothing sent, the cursor holds.
    quiet = Receiver([])
    assert _run(services.redis_url, prefix, quiet.url, secret).returncode == 0 and quiet.got == []
    for r in (receiver, refusing, quiet):
        r.server.shutdown()


def test_the_sender_waits_out_a_redis_restart_and_goes_on(tmp_path: Path) -> None:
    """A Redis of its own, stopped and started again on the same port while the sender runs: the
    sender keeps running, and the event written after the restart is delivered."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from framewatch.dashboard.webhook import WebhookSender, WebhookSettings
    from framewatch.devservices import start_redis, stop_pid

    server = start_redis(tmp_path)
    # No client retries: redis-py's own (3, backoff from 1 s) ride out a 1-s restart and hide the
    # sender's handling; without them the outage stands for one longer than they cover (a failover).
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    keys = c.RedisKeys("whr")
    receiver = Receiver([])
    sender = WebhookSender(client, "whr", WebhookSettings(receiver.url, SECRET), sleep=time.sleep)

    def alert(stream: str) -> None:
        client.xadd(keys.alerts, alert_event_fields(stream, "raise", "ema-above-alert-on", 0.9, 0, "1", "m", int(time.time() * 1000), 0.7, 0.95))

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(receiver.got) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(receiver.got) == n, receiver.got

    sender.cursor()  # the cursor at "now", as the command sets it before it runs
    stopping = threading.Event()
    thread = threading.Thread(target=sender.run, kwargs={"block_ms": 200, "max_backoff_s": 0.5, "stop": stopping.is_set}, daemon=True)
    thread.start()
    try:
        alert("before")
        wait_for(1)
        stop_pid(server.pid)
        time.sleep(1.0)  # the sender meets the closed port a few times
        server = start_redis(tmp_path, port=server.port)
        alert("after")
        wait_for(2)
        assert thread.is_alive(), "the sender stopped on a Redis error"
        assert [p["event"]["stream"] for _, p, _, _ in receiver.got] == ["before", "after"]
        newest = client.xrevrange(keys.alerts, count=1)[0][0]
        deadline = time.monotonic() + 10
        while client.get(sender.cursor_key) != newest and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(sender.cursor_key) == newest  # the new server has the cursor again
    finally:
        stopping.set()
        thread.join(10)
        stop_pid(server.pid)
        receiver.server.shutdown()
    assert not thread.is_alive()


def _sender(url: str, timeout_s: float = 2.0) -> Any:
    from framewatch.dashboard.webhook import WebhookSender, WebhookSettings

    return WebhookSender(None, "unused", WebhookSettings(url, SECRET, timeout_s=timeout_s))


def _serve_raw(answer: Any) -> tuple[str, Any]:
    """A TCP server that hands each connection to ``answer(conn)``: receivers that are not well-behaved HTTP."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/hook", server


def test_a_receiver_that_is_not_http_is_no_answer_not_a_crash() -> None:
    def banner(conn: Any) -> None:
        conn.recv(65536)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        conn.close()

    url, server = _serve_raw(banner)
    try:
        assert _sender(url).post(b"{}", "e") == 0  # retried, then the failed stream; the sender goes on
    finally:
        server.close()


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_timeout() -> None:
    def drip(conn: Any) -> None:
        conn.recv(65536)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                conn.sendall(bytes([byte]))
                time.sleep(0.3)  # every read gets a byte well within a per-read timeout
        except OSError:
            pass
        conn.close()

    url, server = _serve_raw(drip)
    try:
        started = time.monotonic()
        assert _sender(url, timeout_s=1.0).post(b"{}", "e") == 0
        assert time.monotonic() - started < 4.0  # the whole answer would take ~11 s
    finally:
        server.close()


def test_redirects_are_refusals_not_deliveries() -> None:
    got: list[tuple[str, int]] = []

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(("POST", int(self.headers.get("Content-Length", 0))))
            self.send_response(302)
            self.send_header("Location", "/final")
            self.end_headers()

        def do_GET(self) -> None:
            got.append(("GET", 0))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sender = _sender(f"http://127.0.0.1:{server.server_port}/redirect")
        assert sender.post(b'{"a":1}', "e") == 302
        assert got == [("POST", 7)]  # not followed: a bodiless GET would have been counted as delivered
    finally:
        server.shutdown()


def test_a_status_that_came_counts_even_if_the_body_never_ends() -> None:
    def held_open(conn: Any) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\npartial body, then nothing")  # no Content-Length, connection kept
        time.sleep(5)
        conn.close()

    url, server = _serve_raw(held_open)
    try:
        assert _sender(url, timeout_s=1.0).post(b"{}", "e") == 200  # delivered: not sent again eight times
    finally:
        server.close()


def test_the_sender_goes_through_the_environments_proxy(monkeypatch: Any) -> None:
    got: list[tuple[str, str]] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, self.headers.get("X-Framewatch-Event-Id", "")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for name in ("no_proxy", "NO_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
    try:
        assert _sender("http://receiver.invalid/hook").post(b"{}", "e-1") == 204
        assert got == [("http://receiver.invalid/hook", "e-1")]  # the absolute URL, through the proxy
        monkeypatch.setenv("NO_PROXY", "receiver.invalid")
        assert _sender("http://receiver.invalid/hook").post(b"{}", "e-2") == 0  # bypassed: the name does not resolve
    finally:
        proxy.shutdown()
