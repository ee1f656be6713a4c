"""The moderator dashboard: a Starlette app with server-rendered pages and one small script.

Pages: ``/`` (live ranking and the review queue, pushed by server-sent events from ``/events``),
``/review/{alert|near-miss}/{entry}`` (evidence, stream metadata, the score timeline, why it
fired, the decision form and its history), ``/evidence/{id}`` (the image), ``/login``. It reads
only Redis and the evidence store; it never talks to Kafka or the engine.

Every page needs a session; every state change is a POST with the session's CSRF token, a body
of at most :data:`MAX_BODY` bytes, and an Origin (when the browser sends one) of this site.
The reviewer of a decision is the session's user, never a form field.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from framewatch.dashboard.auth import (
    DUMMY_HASH,
    LoginThrottle,
    Session,
    Sessions,
    valid_name,
    verify_password,
)
from framewatch.dashboard.review import KINDS, Item, Review
from framewatch.logs import get_logger
from framewatch.worker import contracts as c
from framewatch.worker.evidence import EvidenceError, valid_id
from framewatch.worker.redis_io import TRANSIENT_ERRORS

log = get_logger("dashboard")

# What a page answers 503 for instead of 500: Redis (connection, timeout, cluster) and the store.
UNAVAILABLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, EvidenceError)

HERE = Path(__file__).parent
COOKIE = "fw_session"
LOGIN_COOKIE = "fw_login"
MAX_BODY = 16 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class DashboardConfig:
    users: dict[str, str] = field(default_factory=dict)  # name -> scrypt hash
    trusted_header: str | None = None  # e.g. X-Forwarded-User, from an auth proxy
    trusted_proxies: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    blur: bool = True
    secure_cookies: bool = False
    push_interval_s: float = 1.0
    ranking_size: int = 20
    public_origin: str | None = None  # e.g. https://review.example.com, when a proxy rewrites Host
    max_streams_per_user: int = 4  # live (SSE) connections per user


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.feedback = Counter("framewatch_feedback_total", "Decisions recorded, by label", ["label"], registry=self.registry)
        self.logins = Counter("framewatch_dashboard_logins_total", "Login attempts, by outcome", ["outcome"], registry=self.registry)
        self.refused = Counter("framewatch_dashboard_refused_total", "Requests refused, by reason", ["reason"], registry=self.registry)
        for label in c.FEEDBACK_LABELS:
            self.feedback.labels(label)


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def safe_next(target: str) -> str:
    """Where to go after signing in: a path of this site only (never another host: an open
    redirect), else the home page."""
    if not target.startswith("/") or target.startswith(("//", "/\\")) or any(ord(ch) < 33 or ch == "\\" for ch in target):
        return "/"
    return target[:512]


def same_site(origin: str, host: str) -> bool:
    """Whether a browser's Origin names this Host: host names case-blind; a port in Host must
    match the origin's (its scheme's default filled in); a Host without a port matches either
    default, since behind a TLS-terminating proxy that keeps Host the app sees http while the
    browser says https."""
    try:
        given, here = urlsplit(origin), urlsplit(f"//{host}")
        origin_port = given.port or {"http": 80, "https": 443}.get(given.scheme)
        host_port = here.port
    except ValueError:
        return False
    if not here.hostname or (given.hostname or "").lower() != here.hostname.lower():
        return False
    return origin_port in (80, 443) if host_port is None else origin_port == host_port


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison that refuses (instead of raising on) non-ASCII input."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


class Snapshots:
    """One snapshot of the ranking per interval for every client, and of each (user, scope) queue:
    many open pages cost Redis what one does."""

    def __init__(self, review: Review, config: DashboardConfig) -> None:
        self.review = review
        self.config = config
        self.cache: dict[tuple[str, str], tuple[float, Any]] = {}

    def _cached(self, key: tuple[str, str], make: Callable[[], Any]) -> Any:
        now = time.monotonic()
        hit = self.cache.get(key)
        if hit is not None and now - hit[0] < self.config.push_interval_s * 0.9:
            return hit[1]
        value = make()
        self.cache[key] = (now, value)
        if len(self.cache) > 1000:
            for old in sorted(self.cache, key=lambda k: self.cache[k][0])[:500]:
                self.cache.pop(old, None)
        return value

    def state(self, user: str, scope: str) -> dict[str, Any]:
        ranking = self._cached(("", "ranking"), lambda: self.review.ranking(self.config.ranking_size))
        queue = self._cached((user, scope), lambda: [i.to_json(user) for i in self.review.queue(user, scope)])
        return {"ranking": ranking, "queue": queue}


def create_app(review: Review, config: DashboardConfig, sessions: Sessions) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    metrics = Metrics()
    throttle = LoginThrottle()
    snapshots = Snapshots(review, config)
    live_streams: dict[str, list[dict[str, bool]]] = {}  # user -> live pages' slots, oldest first

    def secure(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return secure(templates.TemplateResponse(request, name, {"blur": config.blur, **context}, status_code=status))

    def peer(request: Request) -> str:
        return request.client.host if request.client else ""

    def current(request: Request) -> Session | None:
        if config.trusted_header and peer(request) in config.trusted_proxies:
            values = request.headers.getlist(config.trusted_header)
            if values:
                # One value, a valid name: a proxy that *adds* the header beside one the client sent
                # gives two, and neither is believed; "ana, admin" is not a reviewer's name.
                name = values[0].strip()
                if len(values) != 1 or not valid_name(name):
                    return None
                # The proxy vouches for the user; the CSRF token is derived from the name and the secret.
                token = hmac.new(sessions.secret, f"proxy:{name}".encode(), "sha256").hexdigest()
                return Session(name, token, time.time() + 3600)
        session = sessions.read(request.cookies.get(COOKIE))
        if session is not None and config.users and session.user not in config.users and not config.trusted_header:
            return None  # a user removed from the users file
        return session

    async def form(request: Request) -> dict[str, str]:
        """A small urlencoded form, or :class:`Refused`."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise Refused(415, "content-type")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            raise Refused(413, "too-large")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise Refused(413, "too-large")
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "malformed") from None
        return {k: v[-1] for k, v in parsed.items()}

    def same_origin(request: Request) -> bool:
        """A post from this site: no Origin (not a browser, or an old one: the CSRF token still
        guards), the configured public origin, this Host, or the browser's own same-origin word."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        if config.public_origin and origin.rstrip("/") == config.public_origin.rstrip("/"):
            return True
        if request.headers.get("sec-fetch-site") == "same-origin":
            return True
        return origin != "null" and same_site(origin, request.headers.get("host", ""))

    def guarded(handler: Callable[[Request, Session], Awaitable[Response]], post: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = current(request)
            try:
                if session is None:
                    if post or request.url.path.startswith(("/events", "/evidence", "/api")):
                        raise Refused(401, "unauthenticated")
                    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return secure(RedirectResponse("/login" + (f"?next={quote(back)}" if back != "/" else ""), status_code=303))
                if post:
                    if not same_origin(request):
                        raise Refused(403, "origin")
                    fields = await form(request)
                    if not same_token(fields.get("csrf", ""), session.csrf):
                        raise Refused(403, "csrf")
                    request.state.form = fields
                return await handler(request, session)
            except Refused as exc:
                metrics.refused.labels(exc.reason).inc()
                return secure(PlainTextResponse(f"refused: {exc.reason}\n", status_code=exc.status))
            except UNAVAILABLE as exc:  # Redis or the evidence store away: say so, not a 500
                log.warning("store unavailable", path=request.url.path, error=f"{exc.__class__.__name__}: {exc}"[:200])
                return secure(PlainTextResponse("unavailable: Redis or the evidence store cannot be reached; try again shortly\n",
                                                status_code=503, headers={"Retry-After": "5"}))
        return endpoint

    # --- login ---------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        import secrets

        # One token per browser, kept while a login page is open somewhere: every tab's form works
        # (a new token per GET made every tab but the last answer "refused: csrf").
        token = request.cookies.get(LOGIN_COOKIE, "")
        if len(token) != 32 or not all(ch.isalnum() or ch in "-_" for ch in token):
            token = secrets.token_urlsafe(24)
        response = page(request, "login.html", token=token, error=request.query_params.get("error") == "1",
                        proxy=bool(config.trusted_header and not config.users), next=safe_next(request.query_params.get("next", "")))
        response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=config.secure_cookies)
        return response

    async def login(request: Request) -> Response:
        try:
            if not same_origin(request):
                raise Refused(403, "origin")
            fields = await form(request)
            if not same_token(fields.get("token", ""), request.cookies.get(LOGIN_COOKIE, "") or "-"):
                raise Refused(403, "csrf")
        except Refused as exc:
            metrics.refused.labels(exc.reason).inc()
            return secure(PlainTextResponse(f"refused: {exc.reason}\n", status_code=exc.status))
        name, password = fields.get("user", "")[:64], fields.get("password", "")[:1024]
        if not throttle.attempt(name):
            metrics.logins.labels("throttled").inc()
            return secure(PlainTextResponse("too many failed logins for this name; wait a few minutes\n", status_code=429))
        stored = config.users.get(name)
        # An unknown name is checked against a dummy hash: the answer takes as long either way.
        ok = await run_in_threadpool(verify_password, password, stored or DUMMY_HASH) and stored is not None
        back = safe_next(fields.get("next", ""))
        if not ok:
            metrics.logins.labels("failed").inc()
            log.warning("login failed", user=name, peer=peer(request))
            return secure(RedirectResponse("/login?error=1" + (f"&next={quote(back)}" if back != "/" else ""), status_code=303))
        throttle.succeeded(name)
        metrics.logins.labels("ok").inc()
        cookie, _ = sessions.issue(name)
        response = RedirectResponse(back, status_code=303)
        # Lax, not Strict: a link to an item or its evidence from a webhook's receiver, a chat or a
        # mail page is a cross-site navigation, and Strict sent it to the login every time. Writes
        # stay guarded by the CSRF token and the Origin check.
        response.set_cookie(COOKIE, cookie, max_age=int(sessions.max_age_s), httponly=True, samesite="lax", secure=config.secure_cookies)
        response.delete_cookie(LOGIN_COOKIE)
        return secure(response)

    async def logout(request: Request, session: Session) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return secure(response)

    # --- pages -----------------------------------------------------------------------------

    def scope_of(request: Request) -> str:
        scope = request.query_params.get("scope", "mine")
        return scope if scope in ("mine", "open", "all") else "mine"

    async def home(request: Request, session: Session) -> Response:
        scope = scope_of(request)
        ranking = await run_in_threadpool(review.ranking, config.ranking_size)
        queue = await run_in_threadpool(review.queue, session.user, scope)
        return page(request, "index.html", user=session.user, csrf=session.csrf, ranking=ranking, queue=queue, scope=scope)

    async def item_page(request: Request, session: Session) -> Response:
        item = await find(request)
        records = await run_in_threadpool(review.evidence, item)
        timeline = await run_in_threadpool(review.timeline, item)
        return page(request, "item.html", user=session.user, csrf=session.csrf, item=item, records=records,
                    metadata=records[0].metadata if records else {}, text=records[0].text if records else "",
                    chart=timeline_svg(timeline, item), labels=c.FEEDBACK_LABELS, mine=item.decisions.get(session.user, ""),
                    saved=request.query_params.get("saved") == "1", points=len(timeline))

    async def find(request: Request) -> Item:
        kind, entry = request.path_params["kind"], request.path_params["entry"]
        if kind not in KINDS:
            raise Refused(404, "not-found")
        item = await run_in_threadpool(review.item, kind, entry)
        if item is None:
            raise Refused(404, "not-found")
        return item

    async def decide(request: Request, session: Session) -> Response:
        item = await find(request)
        fields = request.state.form
        label, note = fields.get("label", ""), fields.get("note", "")
        if label not in c.FEEDBACK_LABELS:
            raise Refused(400, "label")
        if len(note) > c.MAX_NOTE_CHARS or not all(ch.isprintable() or ch in "\n\r\t" for ch in note):
            raise Refused(400, "note")
        await run_in_threadpool(review.decide, item, session.user, label, note)
        metrics.feedback.labels(label).inc()
        log.info("decision", item=item.event_id, label=label, reviewer=session.user)
        if fields.get("next") == "1":
            following = await run_in_threadpool(review.queue, session.user, "mine", 1)
            if following:
                return secure(RedirectResponse(following[0].url, status_code=303))
            return secure(RedirectResponse("/", status_code=303))
        return secure(RedirectResponse(f"{item.url}?saved=1", status_code=303))

    async def evidence(request: Request, session: Session) -> Response:
        evidence_id = request.path_params["evidence"]
        if not valid_id(evidence_id) or review.store is None:
            raise Refused(404, "not-found")
        found = await run_in_threadpool(review.store.get, evidence_id)
        if found is None:
            raise Refused(404, "not-found")
        response = Response(found[1], media_type="image/jpeg")
        secure(response)
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    async def api_state(request: Request, session: Session) -> Response:
        state = await run_in_threadpool(snapshots.state, session.user, scope_of(request))
        return secure(JSONResponse({**state, "at_ms": int(time.time() * 1000)}))

    async def events(request: Request, session: Session) -> Response:
        if request.method == "HEAD":  # a probe (curl -I, an uptime check): no stream, no slot
            return secure(Response(media_type="text/event-stream"))
        scope = scope_of(request)
        cookie = request.cookies.get(COOKIE)

        async def stream() -> AsyncIterator[str]:
            # At most max_streams_per_user live pages per user; the newest wins: the oldest is told
            # it was superseded and ends within a push interval. (Refusing the newest instead let
            # connections left half-open by a sleeping laptop lock a user out for TCP's ~15 min.)
            mine = live_streams.setdefault(session.user, [])
            slot = {"live": True}
            mine.append(slot)
            while len(mine) > config.max_streams_per_user:
                mine.pop(0)["live"] = False
                metrics.refused.labels("superseded").inc()
            try:
                yield "retry: 2000\n\n"
                last = ""
                while not await request.is_disconnected():
                    if not slot["live"]:
                        yield "event: superseded\ndata: {}\n\n"
                        return
                    if cookie is not None and sessions.read(cookie) is None:
                        yield "event: expired\ndata: {}\n\n"  # the session ended: the page goes to the login
                        return
                    try:
                        state = await run_in_threadpool(snapshots.state, session.user, scope)
                        # Ages change every second; what is compared is what a moderator would see change.
                        seen = json.dumps({**state, "ranking": [{k: v for k, v in r.items() if k != "age_s"} for r in state["ranking"]]},
                                          separators=(",", ":"))
                        data = json.dumps({**state, "at_ms": int(time.time() * 1000)}, separators=(",", ":"))
                    except Exception as exc:  # Redis away: say so, keep the page, try again
                        seen = data = json.dumps({"error": f"{exc.__class__.__name__}: {exc}"[:200]})
                    if seen != last:
                        yield f"event: state\ndata: {data}\n\n"
                        last = seen
                    else:
                        yield ": keep-alive\n\n"
                    await asyncio.sleep(config.push_interval_s)
            finally:
                if slot in mine:
                    mine.remove(slot)
                if not mine:
                    live_streams.pop(session.user, None)

        response = StreamingResponse(stream(), media_type="text/event-stream")
        response.headers["X-Accel-Buffering"] = "no"
        return secure(response)

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(review.client.ping)
        except Exception as exc:
            return PlainTextResponse(f"redis: {exc.__class__.__name__}\n", status_code=503)
        return PlainTextResponse("ok\n")

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", guarded(logout, post=True), methods=["POST"]),
        Route("/", guarded(home), methods=["GET"]),
        Route("/review/{kind}/{entry}", guarded(item_page), methods=["GET"]),
        Route("/review/{kind}/{entry}/decision", guarded(decide, post=True), methods=["POST"]),
        Route("/evidence/{evidence}", guarded(evidence), methods=["GET"]),
        Route("/api/state", guarded(api_state), methods=["GET"]),
        Route("/events", guarded(events), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.metrics = metrics
    return app


def timeline_svg(rows: list[dict[str, Any]], item: Item, width: int = 640, height: int = 160) -> dict[str, Any]:
    """Polylines of the score and the EMA against stream time, the threshold and the item's frame,
    in SVG coordinates (rendered by the template; no script needed)."""
    if not rows:
        return {}
    t0 = min(min(r["pts_ms"] for r in rows), item.pts_ms)
    t1 = max(max(r["pts_ms"] for r in rows), item.pts_ms)
    span = max(1, t1 - t0)

    def x(pts: int) -> float:
        return round(8 + (width - 16) * (pts - t0) / span, 1)

    def y(value: float) -> float:
        return round(height - 8 - (height - 16) * max(0.0, min(1.0, value)), 1)

    rows = sorted(rows, key=lambda r: r["pts_ms"])
    return {
        "width": width, "height": height,
        "score": " ".join(f"{x(r['pts_ms'])},{y(r['score'])}" for r in rows),
        "ema": " ".join(f"{x(r['pts_ms'])},{y(r['ema'])}" for r in rows),
        "threshold_y": y(item.threshold) if item.threshold is not None else None,
        "marker_x": x(item.pts_ms),
        "span_s": round(span / 1000, 1),
        "left": f"{(t0 - item.pts_ms) / 1000:+.0f} s", "right": f"{(t1 - item.pts_ms) / 1000:+.0f} s",
    }
