"""`framewatch dashboard` (the moderator dashboard, `passwd` for its users file),
`framewatch webhook` (signed alert events to a URL) and `framewatch feedback export` (decisions → a
training data set): docs/review.md."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from pathlib import Path
from typing import Any

from framewatch.cli.settings import add_settings_flags, settings_from_args


def _review(args: argparse.Namespace) -> Any:
    """The review model over the configured Redis and evidence store."""
    from framewatch.dashboard.review import Review
    from framewatch.worker.evidence import open_store
    from framewatch.worker.redis_io import connect

    settings = settings_from_args(args)
    return Review(connect(settings.redis), settings.redis.prefix, open_store(settings.evidence, settings.redis),
                  settings.scoring.stale_after_s), settings


def _dashboard(args: argparse.Namespace) -> int:
    from framewatch.dashboard.auth import AuthError

    try:
        import uvicorn
    except ImportError:
        raise AuthError("needs the dashboard's packages: pip install 'framewatch[dashboard]' (this installation lacks uvicorn)") from None
    if not 0 < args.port < 65536:
        raise AuthError(f"--port {args.port}: 1–65535")
    from framewatch.dashboard.app import DashboardConfig, create_app
    from framewatch.dashboard.auth import Sessions, load_secret, read_users

    if args.users is None and args.trusted_header is None:
        raise AuthError("give --users FILE (write it with `framewatch dashboard passwd FILE NAME`) or --trusted-header "
                        "for an authenticating proxy: the dashboard has no anonymous access")
    users = read_users(args.users) if args.users is not None else {}
    if args.users is not None and not users:
        raise AuthError(f"users file {args.users} names no user; add one with `framewatch dashboard passwd {args.users} NAME`")
    review, _ = _review(args)
    review.client.ping()  # an unreachable Redis is said now, with the front door's one line
    config = DashboardConfig(users, args.trusted_header, frozenset(args.trusted_proxy or ["127.0.0.1", "::1"]), not args.no_blur,
                             args.secure_cookies, public_origin=args.public_origin)
    app = create_app(review, config, Sessions(load_secret(args.secret_file)))
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"framewatch dashboard: listening on {args.host}, beyond this machine; put TLS in front of it (--secure-cookies)",
              file=sys.stderr)
    print(f"framewatch dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr, flush=True)
    # Live pages hold server-sent-event connections open: without a bound, a stop would wait for them forever.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, proxy_headers=False,
                timeout_graceful_shutdown=2)
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from framewatch.dashboard.auth import AuthError, read_users, set_password, valid_name

    # Said before a password is typed: a name or a file that cannot be used.
    if not valid_name(args.name):
        raise AuthError(f"user name {args.name!r}: 1–64 letters, digits, . _ - @")
    if not args.file.parent.is_dir():
        raise AuthError(f"users file {args.file}: its folder {args.file.parent} does not exist")
    if args.file.exists():
        read_users(args.file)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("framewatch dashboard passwd: the passwords differ; nothing written", file=sys.stderr)
            return 2
    set_password(args.file, args.name, password)
    print(f"{args.file}: {args.name} set (scrypt)", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from framewatch.dashboard.feedback import export_feedback

    review, _ = _review(args)

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % 50 == 0):
            print(f"\rfeedback: {done}/{total} items", end="\n" if done == total else "", file=sys.stderr, flush=True)

    summary = export_feedback(review, args.out, args.since, args.test_fraction, args.keep_held, progress, args.val_fraction)
    print(f"wrote {summary['rows']} images of {summary['exported_items']} decided items to {args.out} "
          f"(train {summary['by_split']['train']}, val {summary['by_split']['val']}, test {summary['by_split']['test']}; "
          f"violent {summary['by_label']['violent']}, "
          f"non-violent {summary['by_label']['non-violent']}); left out: {summary['unsure']} unsure, {summary['conflict']} with "
          f"disagreeing reviewers, {summary['missing_evidence']} evidence frames gone")
    if summary["rows"]:
        print(f"train on it: framewatch train --data {args.out} --out runs/feedback")
    return 0


def _webhook(args: argparse.Namespace) -> int:
    from framewatch.dashboard.auth import AuthError, load_secret
    from framewatch.dashboard.webhook import WebhookSender, WebhookSettings
    from framewatch.worker import contracts as c
    from framewatch.worker.redis_io import connect

    if not args.url.startswith(("https://", "http://")):
        raise AuthError(f"--url {args.url!r}: an http(s) URL")
    events = frozenset(e.strip() for e in args.events.split(",") if e.strip())
    if not events or not events <= {c.ALERT_RAISE, c.ALERT_CLEAR}:
        raise AuthError(f"--events {args.events!r}: raise, clear or both")
    if args.max_attempts < 1:
        raise AuthError(f"--max-attempts {args.max_attempts}: at least 1")
    settings = settings_from_args(args)
    sender = WebhookSender(connect(settings.redis), settings.redis.prefix, WebhookSettings(
        args.url, load_secret(args.secret_file), args.name, events, args.dashboard_url, args.max_attempts))
    sender.client.ping()
    print(f"framewatch webhook: alert events ({', '.join(sorted(events))}) to {args.url}"
          + (" until Ctrl-C" if not args.once else ""), file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sender.run(once=args.once)
    print(f"framewatch webhook: {sender.delivered} delivered, {sender.failed} failed (kept in {sender.failed_key})", file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    d = commands.add_parser(
        "dashboard", help="the moderator dashboard: live ranking, review queue, evidence, decisions",
        description="Serve the review dashboard (docs/review.md). It reads Redis and the evidence store only (never Kafka or the "
        "engine) and writes decisions to the framewatch:feedback stream. Sign-in: a users file with scrypt hashes (--users) "
        "or identity headers from an authenticating proxy (--trusted-header). Listens on loopback unless --host says otherwise.",
    )
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=int, default=8780, help="port (default 8780)")
    d.add_argument("--users", type=Path, default=None, help="users file: NAME:scrypt$… lines (framewatch dashboard passwd)")
    d.add_argument("--trusted-header", default=None, metavar="HEADER",
                   help="take the user's name from this request header (e.g. X-Forwarded-User), set by an auth proxy")
    d.add_argument("--trusted-proxy", action="append", metavar="ADDRESS",
                   help="peer addresses whose --trusted-header is believed (repeatable; default 127.0.0.1 and ::1)")
    d.add_argument("--secret-file", type=Path, default=None,
                   help="session-signing secret (≥16 bytes; default: random, so a restart signs everyone out)")
    d.add_argument("--no-blur", action="store_true", help="show evidence at once (default: blurred until clicked)")
    d.add_argument("--secure-cookies", action="store_true", help="cookies only over HTTPS (behind a TLS proxy)")
    d.add_argument("--public-origin", default=None, metavar="URL",
                   help="the address browsers use (e.g. https://review.example.com), when a proxy in front rewrites the Host header")
    add_settings_flags(d)
    d.set_defaults(handler=_dashboard)
    dc = d.add_subparsers(dest="dashboard_command", metavar="ACTION")
    pw = dc.add_parser("passwd", help="add a user or change a password in a users file",
                       description="Write NAME's scrypt hash into FILE (created with mode 0600 if missing).")
    pw.add_argument("file", type=Path, metavar="FILE")
    pw.add_argument("name", metavar="NAME")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    pw.set_defaults(handler=_passwd)

    w = commands.add_parser(
        "webhook", help="POST alert raise/clear events to a URL, signed (HMAC) and retried",
        description="Follow framewatch:alerts and POST each raise/clear event as JSON to --url, signed with "
        "X-Framewatch-Signature: t=<unix>,v1=<HMAC-SHA256 of 't.body'> (the secret from --secret-file), with "
        "X-Framewatch-Event-Id for receivers to drop repeats. Retries 500/502/503/504/408/425/429/no answer with backoff (through HTTP(S)_PROXY if set); redirects are not "
        "followed (give the final URL); gives up into "
        "framewatch:webhook:NAME:failed. Resumes where it stopped (a cursor in Redis); the first run starts at new events. "
        "docs/review.md.",
    )
    w.add_argument("--url", required=True, help="the receiver (https:// in production)")
    w.add_argument("--secret-file", type=Path, required=True, help="the shared signing secret (≥ 16 bytes)")
    w.add_argument("--name", default="default", help="this sender's name: its cursor and failed stream (default: default)")
    w.add_argument("--events", default="raise,clear", help="raise, clear, or both (default)")
    w.add_argument("--dashboard-url", default=None, help="adds evidence_urls (the dashboard's /evidence/ID) to each payload")
    w.add_argument("--max-attempts", type=int, default=8, help="tries per event before it goes to the failed stream (default 8)")
    w.add_argument("--once", action="store_true", help="send what is pending, then exit")
    add_settings_flags(w)
    w.set_defaults(handler=_webhook)

    f = commands.add_parser("feedback", help="moderators' decisions as training data",
                            description="Turn the decisions in framewatch:feedback into data sets (docs/review.md).")
    fc = f.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)
    e = fc.add_parser(
        "export", help="write the labelled evidence as an image–text data set for `framewatch train`",
        description="Write OUT/train, OUT/val and OUT/test (imagefolder: metadata.jsonl with file_name, text from the stream's metadata, "
        "label, and score, threshold, model, stream, time, reviewers), whole streams on one side. Items marked unsure or on which "
        "reviewers disagree are left out. Exported evidence is released back under retention.",
    )
    e.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    e.add_argument("--since", default=None, help="only decisions from then on: an ISO time (UTC unless it has an offset, e.g. 2026-11-28T09:00+01:00), "
                   "a date (2026-11-28 or 20261128), epoch seconds or ms, or a feedback entry id (export.json's through)")
    e.add_argument("--test-fraction", type=float, default=0.2, help="streams held back as test, per label (default 0.2)")
    e.add_argument("--val-fraction", type=float, default=0.15, help="streams for validation, per label (default 0.15)")
    e.add_argument("--keep-held", action="store_true", help="keep the exported evidence held (default: release it)")
    e.add_argument("--quiet", action="store_true")
    add_settings_flags(e)
    e.set_defaults(handler=_export)
