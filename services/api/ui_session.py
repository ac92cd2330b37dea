"""Who may use the web page: one-time login tokens, browser sessions, CSRF tokens, Host and Origin rules.

The API secret never reaches a browser. The way in is:

    bitdust open ──POST /ui/token (api_secret)──▶ token, lives TOKEN_TTL seconds, redeemable once
    browser ──GET /ui/?token=T──▶ session id in an HttpOnly, SameSite=Strict cookie; 303 to /ui/
    page ──GET /ui/session (cookie)──▶ the session's CSRF token
    page ──REST with cookie + X-CSRF-Token / WebSocket with cookie, ?csrf= and the UI's Origin──▶ API

Refusals, each with a stable reason: a Host that is not a loopback name (`host_forbidden`: DNS
rebinding), an Origin that is not the UI's own (`origin_forbidden`: cross-site requests), a token
unknown, used or older than TOKEN_TTL (`token_invalid`), a missing or wrong CSRF token
(`csrf_missing`, `csrf_wrong`).

Tokens and session ids are kept only as SHA-256 digests, so a lookup's timing says nothing about
them; everything lives in memory: a restart of the api process logs every browser out. Pure code:
no aiohttp, the clock is injected.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

TOKEN_TTL = 60.0
"""How long a login token may wait for its browser, in seconds."""
SESSION_TTL = 12 * 3600.0
"""How long a browser session lasts from its login, in seconds."""
MAX_TOKENS = 16
MAX_SESSIONS = 32
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Session:
    """One logged-in browser."""

    csrf: str
    created: float
    expires: float = field(default=0.0)


class UiSessions:
    """Issues login tokens, trades them for sessions, checks sessions and their CSRF tokens."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._tokens: dict[str, float] = {}
        self._sessions: dict[str, Session] = {}

    def issue_token(self) -> str:
        """A new login token, valid for TOKEN_TTL seconds and for one login."""
        self._expire()
        while len(self._tokens) >= MAX_TOKENS:
            self._tokens.pop(next(iter(self._tokens)))
        token = secrets.token_urlsafe(32)
        self._tokens[_digest(token)] = self._clock() + TOKEN_TTL
        return token

    def redeem(self, token: str) -> tuple[str, Session] | None:
        """Trade a token for (session id, session); None if it is unknown, used or too old."""
        self._expire()
        if not token or self._tokens.pop(_digest(token), None) is None:
            return None
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        now = self._clock()
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), created=now, expires=now + SESSION_TTL)
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def session(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, or None."""
        if not session_id:
            return None
        found = self._sessions.get(_digest(session_id))
        if found is None or found.expires <= self._clock():
            return None
        return found

    def end(self, session_id: str | None) -> None:
        """Log a browser out."""
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    @staticmethod
    def csrf_problem(session: Session, given: str | None) -> str | None:
        """The refusal reason of a CSRF token given with a session's request, or None when it matches."""
        if not given:
            return "csrf_missing"
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            return "csrf_wrong"
        return None

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, deadline in self._tokens.items() if deadline <= now]:
            del self._tokens[key]
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


def host_name(host_header: str | None) -> str | None:
    """The name part of a Host header ("127.0.0.1:8180" -> "127.0.0.1", "[::1]:80" -> "::1")."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_host(host_header: str | None) -> bool:
    """True when a Host header names this machine by a loopback name or address (no DNS rebinding)."""
    name = host_name(host_header)
    if name is None:
        return False
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def ui_origins(rest_port: int) -> frozenset[str]:
    """The origins the page can have: the REST port under each loopback name."""
    return frozenset({f"http://127.0.0.1:{rest_port}", f"http://localhost:{rest_port}", f"http://[::1]:{rest_port}"})


def cookie_name(rest_port: int) -> str:
    """The session cookie's name; browsers share cookies across ports, so it names the node's port."""
    return f"bitdust_ui_{rest_port}"
