"""The web page's HTTP edge: `/ui/` files, login by one-time token, session, folder browser, and the
request check the gateway runs on every REST and WebSocket request.

Routes on the REST port (the rules themselves are told in `services/api/ui_session.py`):

    POST /ui/token         api_secret only: a one-time login token and the URL that uses it
    GET  /ui/?token=T      trades T for a session cookie, then 303 to /ui/ (the token leaves the URL)
    GET  /ui/              the page; /ui/<file> its modules and style, from this package only
    GET  /ui/session       the session's CSRF token and the WebSocket port (cookie)
    POST /ui/logout        ends the session (cookie + CSRF)
    GET  /ui/folders       the folder browser (api_secret, or cookie + CSRF)

Every other route keeps its api_secret check; a session cookie is a second way in, for the page's
own requests only: with the X-CSRF-Token header on REST (on every verb: some of the reference's GET
routes change state), with `?csrf=` and the page's Origin on the WebSocket (browsers cannot put
headers on a WebSocket, and always send Origin there).
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from common import codec
from common.errors import AuthError, NodeError
from services.api.folders import FolderBrowser, default_roots
from services.api.ui_session import (SESSION_TTL, TOKEN_TTL, UiSessions, cookie_name, host_name, is_loopback_host,
                                     ui_origins)

log = logging.getLogger(__name__)

UI_DIR = Path(__file__).with_name("ui")
ACCESS_KEY = web.RequestKey("ui_access", str)
"""How a request got in: "secret", "session" or "none" (only /ui/ routes let "none" through)."""
CSRF_HEADER = "X-CSRF-Token"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                ".png": "image/png"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(err: NodeError) -> web.Response:
    return web.json_response({"status": "ERROR", "errors": [str(err)], "reason": err.reason}, status=err.status,
                             dumps=lambda obj: codec.dumps(obj).decode())


def _ok(result: Any) -> web.Response:
    return web.json_response({"status": "OK", "result": result}, dumps=lambda obj: codec.dumps(obj).decode(),
                             headers={"Cache-Control": "no-store"})


def _load_static(root: Path) -> dict[str, tuple[bytes, str]]:
    """Every file the page is made of, read once: nothing else under /ui/ is ever served."""
    found: dict[str, tuple[bytes, str]] = {}
    for path in sorted(root.rglob("*")):
        kind = STATIC_TYPES.get(path.suffix)
        if path.is_file() and kind is not None:
            found[path.relative_to(root).as_posix()] = (path.read_bytes(), kind)
    return found


class UiGate:
    """Authorizes every gateway request and serves the page's own routes."""

    def __init__(self, secret: bytes, rest_port: int, ws_port: int, node_home: Path,
                 sessions: UiSessions | None = None):
        self._secret = secret
        self.rest_port = rest_port
        self.ws_port = ws_port
        self.sessions = sessions or UiSessions()
        self.origins = ui_origins(rest_port)
        self.cookie = cookie_name(rest_port)
        self.folders = FolderBrowser(default_roots(node_home))
        self.static = _load_static(UI_DIR)

    # ---- the check of every request ------------------------------------------------------------

    def authorize(self, request: web.Request, rest: bool, given: str | None) -> None:
        """Let a request in or raise `AuthError`; records how it got in under ACCESS_KEY.

        `given` is the api_secret the request carries, if any (the gateway knows where to look).

        Raises:
            AuthError: host_forbidden, origin_forbidden, unauthorized (401), forbidden, csrf_missing,
                csrf_wrong (403).
        """
        if not is_loopback_host(request.headers.get("Host")):
            raise AuthError("the Host header must name this machine by a loopback name", reason="host_forbidden",
                            status=403)
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.origins:
            raise AuthError("requests from other origins are refused", reason="origin_forbidden", status=403)
        if given:
            if not hmac.compare_digest(given.encode(), self._secret):
                raise AuthError("api_secret is wrong", reason="forbidden", status=403)
            request[ACCESS_KEY] = "secret"
            return
        session = self.sessions.session(request.cookies.get(self.cookie))
        if rest and (request.path == "/ui" or request.path.startswith("/ui/")):
            request[ACCESS_KEY] = "session" if session is not None else "none"
            return  # the page's own routes decide what they need
        if session is None:
            raise AuthError("api_secret is required", reason="unauthorized", status=401)
        if rest:
            csrf = request.headers.get(CSRF_HEADER)
        else:
            if origin is None:
                raise AuthError("a browser WebSocket must come from the page", reason="origin_forbidden",
                                status=403)
            csrf = request.query.get("csrf")
        problem = self.sessions.csrf_problem(session, csrf)
        if problem is not None:
            raise AuthError(f"{CSRF_HEADER} is missing or wrong", reason=problem, status=403)
        request[ACCESS_KEY] = "session"

    def _session_with_csrf(self, request: web.Request) -> None:
        """For the page's routes that act: api_secret, or the session and its CSRF header."""
        if request[ACCESS_KEY] == "secret":
            return
        session = self.sessions.session(request.cookies.get(self.cookie))
        if session is None:
            raise AuthError("log in with `bitdust open`", reason="unauthorized", status=401)
        problem = self.sessions.csrf_problem(session, request.headers.get(CSRF_HEADER))
        if problem is not None:
            raise AuthError(f"{CSRF_HEADER} is missing or wrong", reason=problem, status=403)

    # ---- routes ---------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """The page's routes; add them before the API's catch-all route."""
        app.router.add_get("/ui", self._to_index)
        app.router.add_post("/ui/token", self._refusing(self._token))
        app.router.add_get("/ui/session", self._refusing(self._session))
        app.router.add_post("/ui/logout", self._refusing(self._logout))
        app.router.add_get("/ui/folders", self._refusing(self._folders))
        app.router.add_get("/ui/", self._index)
        app.router.add_get("/ui/{name:.+}", self._file)

    @staticmethod
    def _refusing(handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except NodeError as err:
                return _refusal(err)
        return run

    async def _to_index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/ui/")

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if request[ACCESS_KEY] != "secret":
            raise AuthError("a login token needs the api_secret", reason="unauthorized", status=401)
        token = self.sessions.issue_token()
        return _ok({"token": token, "expires_in": TOKEN_TTL,
                    "url": f"http://127.0.0.1:{self.rest_port}/ui/?token={token}"})

    async def _index(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token is None:
            return self._static_response(request, "index.html")
        found = self.sessions.redeem(token)
        if found is None:
            return web.Response(status=403, text="This login link has expired or was already used: run "
                                "`bitdust open` again.\n", headers=self._headers(request, "text/plain"))
        session_id, _ = found
        response = web.Response(status=303, headers={"Location": "/ui/", "Cache-Control": "no-store",
                                                     "Referrer-Policy": "no-referrer"})
        response.set_cookie(self.cookie, session_id, path="/", httponly=True, samesite="Strict",
                            max_age=int(SESSION_TTL))
        log.info("a browser logged in to the page")
        return response

    async def _session(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.session(request.cookies.get(self.cookie))
        if session is None:
            raise AuthError("log in with `bitdust open`", reason="unauthorized", status=401)
        return _ok({"csrf": session.csrf, "ws_port": self.ws_port, "rest_port": self.rest_port})

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        self._session_with_csrf(request)
        self.sessions.end(request.cookies.get(self.cookie))
        response = _ok({"logged_out": True})
        response.del_cookie(self.cookie, path="/")
        return response

    async def _folders(self, request: web.Request) -> web.StreamResponse:
        self._session_with_csrf(request)
        return _ok(self.folders.list(request.query.get("path")))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        return self._static_response(request, request.match_info["name"])

    def _static_response(self, request: web.Request, name: str) -> web.StreamResponse:
        found = self.static.get(name)
        if found is None:
            return web.Response(status=404, text="not found\n", headers=self._headers(request, "text/plain"))
        body, kind = found
        return web.Response(body=body, headers=self._headers(request, kind))

    def _headers(self, request: web.Request, kind: str) -> dict[str, str]:
        name = host_name(request.headers.get("Host")) or "127.0.0.1"
        ws_host = f"[{name}]" if ":" in name else name
        policy = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  f"connect-src 'self' ws://{ws_host}:{self.ws_port}; base-uri 'none'; form-action 'none'; "
                  "frame-ancestors 'none'")
        return {"Content-Type": kind if kind.startswith("image/") else f"{kind}; charset=utf-8",
                "Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}

