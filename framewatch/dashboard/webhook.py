"""``framewatch webhook``: alert raise and clear events POSTed to a URL, signed, retried.

Each event of ``framewatch:alerts`` (docs/contracts.md) is sent once it is in the stream, in
order, as JSON::

    {"type": "alert.raise", "id": "<entry id>", "event": {<the event's fields>},
     "evidence_urls": ["<dashboard>/evidence/<id>", …]}

with ``X-Framewatch-Event-Id`` (the event's ``event_id``: receivers drop repeats — delivery is at
least once) and ``X-Framewatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">``
with the shared secret; receivers check it and refuse a ``t`` older than a few minutes.

A delivery is done on any 2xx. No answer (a connection error, ``timeout_s`` passed before the
status came, something that is not HTTP), 408, 425, 429, 500, 502, 503 and 504 are retried with exponential backoff
(0.5 s doubling to ``max_backoff_s``) up to ``max_attempts``; other answers (redirects included:
they are not followed),
and events that used up their attempts, go to ``framewatch:webhook:<name>:failed`` (a Redis stream
with the status and the event) and the sender moves on. Where it is in the alerts stream is kept
in Redis (``framewatch:webhook:<name>:cursor``) after every event, so a restart resumes there; a
Redis that goes away (restart, failover) is waited out with backoff, and sending resumes after the
last event handled.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framewatch.logs import get_logger
from framewatch.worker import contracts as c
from framewatch.worker.redis_io import TRANSIENT_ERRORS

log = get_logger("webhook")

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, body: bytes, header: str, now: float | None = None, tolerance_s: float = 300.0) -> bool:
    """What a receiver does (and the tests): the signature matches and is recent."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp).encode(), f"t={timestamp},v1={parts.get('v1', '')}".encode())


@dataclass
class WebhookSettings:
    url: str
    secret: bytes
    name: str = "default"
    events: frozenset[str] = frozenset({c.ALERT_RAISE, c.ALERT_CLEAR})
    dashboard_url: str | None = None
    max_attempts: int = 8
    max_backoff_s: float = 60.0
    timeout_s: float = 10.0


class WebhookSender:
    def __init__(self, client: Any, prefix: str, settings: WebhookSettings, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = c.RedisKeys(prefix)
        self.settings = settings
        self.sleep = sleep
        self.clock = clock
        self.cursor_key = self.keys.webhook_cursor(settings.name)
        self.failed_key = self.keys.webhook_failed(settings.name)
        self.delivered = 0
        self.failed = 0

    def cursor(self) -> str:
        """Where to go on from: the stored cursor, else the newest event now (nothing old is replayed)."""
        stored = self.client.get(self.cursor_key)
        if stored:
            return stored.decode() if isinstance(stored, bytes) else str(stored)
        newest: Any = self.client.xrevrange(self.keys.alerts, count=1)
        start = newest[0][0].decode() if newest else "0-0"
        self.client.set(self.cursor_key, start)  # kept at once: what arrives from now on is sent, even after a restart
        return start

    def body(self, entry_id: str, event: dict[str, str]) -> bytes:
        urls = []
        if self.settings.dashboard_url:
            base = self.settings.dashboard_url.rstrip("/")
            urls = [f"{base}/evidence/{e}" for e in event.get(c.A_EVIDENCE, "").split(",") if e]
        payload = {"type": f"alert.{event.get(c.A_EVENT, '')}", "id": entry_id, "event": event, "evidence_urls": urls}
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    def post(self, body: bytes, event_id: str) -> int:
        """One attempt: the HTTP status, or 0 for no usable answer (a connection error, a timeout,
        something that is not HTTP). ``timeout_s`` bounds the whole attempt, not each read: a
        receiver that drips its answer a byte at a time is cut off. Redirects are not followed
        (urllib would turn the POST into a bodiless GET and call it delivered): a 3xx is a refusal."""
        parts = urllib.parse.urlsplit(self.settings.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # HTTP(S)_PROXY and NO_PROXY as urllib reads them: an egress proxy in front of the receiver.
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = None
        via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}") if proxy else parts
        kind = http.client.HTTPSConnection if via.scheme == "https" else http.client.HTTPConnection
        try:
            conn = kind(via.hostname or "", via.port, timeout=self.settings.timeout_s)
        except ValueError:  # a port that is not a number
            return 0
        if proxy and parts.scheme == "https":
            conn.set_tunnel(parts.hostname or "", parts.port or 443)  # CONNECT: TLS end to end
        elif proxy:
            target = self.settings.url  # a plain proxy takes the absolute URL
        headers = {"Content-Type": "application/json", "User-Agent": "framewatch-webhook", "X-Framewatch-Event-Id": event_id,
                   "X-Framewatch-Signature": sign(self.settings.secret, body, int(self.clock()))}
        status = [0]

        def attempt() -> None:
            try:
                conn.request("POST", target, body=body, headers=headers)
                response = conn.getresponse()
                status[0] = int(response.status)  # the answer is its status: a body that never ends does not undo a 200
                response.read(64 * 1024)  # not used; a bounded read lets the connection close cleanly
            except (OSError, http.client.HTTPException, ValueError):
                pass

        thread = threading.Thread(target=attempt, name="webhook-post", daemon=True)
        thread.start()
        thread.join(self.settings.timeout_s)
        if thread.is_alive():  # past the deadline: wake the blocked read; no answer unless the status had come
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            thread.join(5.0)
        conn.close()
        return status[0]

    def deliver(self, entry_id: str, event: dict[str, str]) -> bool:
        body = self.body(entry_id, event)
        delay = 0.5
        status = 0
        for attempt in range(1, self.settings.max_attempts + 1):
            status = self.post(body, event.get(c.A_EVENT_ID, entry_id))
            if 200 <= status < 300:
                self.delivered += 1
                return True
            if status and status not in RETRY_STATUSES:
                break  # the receiver refuses it: trying again will not help
            if attempt < self.settings.max_attempts:
                log.warning("webhook delivery failed; retrying", status=status or "no answer", attempt=attempt, retry_in_s=delay, id=entry_id)
                self.sleep(delay)
                delay = min(delay * 2, self.settings.max_backoff_s)
        self.failed += 1
        log.error("webhook delivery given up; kept in the failed stream", status=status or "no answer", id=entry_id, key=self.failed_key)
        self.client.xadd(self.failed_key, {"id": entry_id, "status": str(status), "url": self.settings.url, "event": json.dumps(event)},
                         maxlen=10_000, approximate=True)
        return False

    def run(self, once: bool = False, block_ms: int = 1000, max_backoff_s: float = 10.0,
            stop: Callable[[], bool] = lambda: False) -> int:
        """Sends events as they arrive (``once``: what is there now, then returns). Returns how many
        were sent. Redis errors (a restart, a failover, a dropped connection) are waited out with
        backoff and the sender resumes after the last event it handled — an event whose delivery
        was not yet recorded is sent again (receivers drop repeats by event id); with ``once`` they
        are raised. ``block_ms`` must stay below the client's socket timeout; ``stop`` is asked
        between reads (the command stops on Ctrl-C instead)."""
        last: str | None = None
        resave = False
        delay = 0.5
        while not stop():
            try:
                if last is None:
                    last = self.cursor()
                elif resave:
                    self.client.set(self.cursor_key, last)  # the write before the error may have been lost with the server
                    resave = False
                response: Any = self.client.xread({self.keys.alerts: last}, count=100, block=None if once else block_ms)
                entries = [(e.decode(), {k.decode(): v.decode("utf-8", "replace") for k, v in f.items()}) for _, batch in response or []
                           for e, f in batch]
                for entry_id, event in entries:
                    if event.get(c.A_EVENT) in self.settings.events:
                        self.deliver(entry_id, event)
                    last = entry_id
                    self.client.set(self.cursor_key, last)
                delay = 0.5
            except TRANSIENT_ERRORS as exc:
                if once:
                    raise
                resave = True
                log.warning("redis unavailable; the webhook waits and resumes after the last event it handled",
                            error=str(exc), retry_in_s=delay, after=last)
                self.sleep(delay)
                delay = min(delay * 2, max_backoff_s)
                continue
            if once and not entries:
                break
        return self.delivered
