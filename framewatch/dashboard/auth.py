"""Who may use the dashboard: users with scrypt-hashed passwords, or identity headers from a
trusted auth proxy; signed session cookies; CSRF tokens bound to the session.

- **Users file** (``--users FILE``, a Docker/Kubernetes secret works): one ``name:hash`` a line,
  the hash ``scrypt$n$r$p$salt$key`` (base64), written by ``framewatch dashboard passwd FILE NAME``.
  Passwords are never stored or logged in clear.
- **Trusted proxy** (``--trusted-header X-Forwarded-User``): the header names the user, but only
  on requests whose peer address is in ``--trusted-proxy`` (loopback by default); anywhere else
  the header is ignored, so a client cannot claim a name by sending it.
- **Sessions** are ``payload.signature`` cookies (HMAC-SHA256 with the server's secret; a random
  one per process unless ``--secret-file``, so a restart logs everyone out), HttpOnly and
  SameSite=Lax, with an expiry inside the signed payload. Each session has its own CSRF
  token; every form post must carry it, and a post whose Origin is another site is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from framewatch.errors import FrameWatchError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_NAME_CHARS = 64


class AuthError(FrameWatchError, ValueError):
    """A users file or secret that cannot be used."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        derived = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(_unb64(key)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(derived, _unb64(key))


def valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_CHARS and all(ch.isalnum() or ch in "._-@" for ch in name)


def read_users(path: Path) -> dict[str, str]:
    """name -> hash; a malformed line is an error naming the line (never a silent lock-out)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AuthError(f"users file {path} cannot be read: {exc.strerror}") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not valid_name(name) or not stored.startswith("scrypt$"):
            raise AuthError(f"users file {path} line {number}: expected NAME:scrypt$… (write it with `framewatch dashboard passwd`)")
        users[name] = stored
    return users


def set_password(path: Path, name: str, password: str) -> None:
    """Add or replace one user's line; the file is written atomically with mode 0600."""
    if not valid_name(name):
        raise AuthError(f"user name {name!r}: 1–{MAX_NAME_CHARS} letters, digits, . _ - @")
    if len(password) < 8:
        raise AuthError("the password must have at least 8 characters")
    users = read_users(path) if path.exists() else {}
    users[name] = hash_password(password)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{n}:{h}\n" for n, h in sorted(users.items())))
        os.replace(tmp, path)
    except OSError as exc:
        raise AuthError(f"users file {path} cannot be written: {exc.strerror}") from None


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    expires: float


class Sessions:
    """Signed, expiring session cookies; nothing is stored server-side."""

    def __init__(self, secret: bytes, max_age_s: float = 12 * 3600) -> None:
        if len(secret) < 16:
            raise AuthError("the session secret must have at least 16 bytes")
        self.secret = secret
        self.max_age_s = max_age_s

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self.secret, payload, hashlib.sha256).digest())

    def issue(self, user: str, now: float | None = None) -> tuple[str, Session]:
        session = Session(user, secrets.token_urlsafe(24), (now or time.time()) + self.max_age_s)
        payload = json.dumps({"u": session.user, "c": session.csrf, "e": session.expires}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._sign(payload)}", session

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or len(cookie) > 2048 or "." not in cookie:
            return None
        body, _, signature = cookie.partition(".")
        try:
            payload = _unb64(body)
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode("utf-8", "replace")):
            return None
        try:
            data = json.loads(payload)
            session = Session(str(data["u"]), str(data["c"]), float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (now or time.time()) else None


def load_secret(path: Path | None) -> bytes:
    if path is None:
        return secrets.token_bytes(32)
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise AuthError(f"secret file {path} cannot be read: {exc.strerror}") from None
    if len(secret) < 16:
        raise AuthError(f"secret file {path} must hold at least 16 bytes")
    return secret


class LoginThrottle:
    """At most ``limit`` login attempts per user name in ``window_s`` that did not succeed: slows
    password guessing from anywhere (a proxy in front makes every client one address). An attempt
    counts *before* its password is checked, so concurrent guesses cannot all slip through; a
    success clears the name's count. Bounded: the least recently tried names are forgotten."""

    def __init__(self, limit: int = 10, window_s: float = 300.0, max_names: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_names = max_names
        self.attempts: OrderedDict[str, list[float]] = OrderedDict()

    def attempt(self, name: str, now: float | None = None) -> bool:
        """Counts an attempt; False when the name is over its limit (then nothing is checked)."""
        now = time.time() if now is None else now
        recent = [t for t in self.attempts.get(name, []) if t > now - self.window_s]
        if len(recent) >= self.limit:
            self.attempts[name] = recent
            self.attempts.move_to_end(name)  # a name under attack is the last to be forgotten
            return False
        recent.append(now)
        self.attempts[name] = recent
        self.attempts.move_to_end(name)
        while len(self.attempts) > self.max_names:
            self.attempts.popitem(last=False)
        return True

    def succeeded(self, name: str) -> None:
        self.attempts.pop(name, None)


# Checked for a name that is not in the users file, so that the answer takes as long as for one
# that is: response times do not tell which names exist.
DUMMY_HASH = hash_password("framewatch: no such user", salt=b"0123456789abcdef")
