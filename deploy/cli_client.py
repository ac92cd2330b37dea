"""How the `bitdust` commands reach a node: REST calls by API method name, and its events over the WebSocket.

Every failure becomes a `CliError` carrying the exit code the command ends with, so `main` prints
one line and never a traceback: `NodeDownError` (3) when nothing answers, `CallFailedError` (1)
when the node answered with an error.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from common import codec, registry
from common.config_store import ConfigStore
from common.home import NodeHome
from deploy import netns, node

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
CALL_TIMEOUT = 120.0
"""Seconds a command waits for one API answer (a message send waits for a ping and an ack, 15 s each)."""


class CliError(Exception):
    """A command cannot go on: `message` is the one line shown, `code` the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED, reason: str = ""):
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason


class NodeDownError(CliError):
    def __init__(self, message: str):
        super().__init__(message, EXIT_NOT_RUNNING, "node_not_running")


class CallFailedError(CliError):
    """The node answered a call with an error envelope."""

    def __init__(self, method: str, status: int, doc: dict[str, Any]):
        errors = doc.get("errors") or [f"HTTP {status}"]
        super().__init__(f"{method}: {'; '.join(str(e) for e in errors)}", EXIT_FAILED, str(doc.get("reason") or ""))
        self.status = status


class NodeClient:
    """One node, named by its home folder."""

    def __init__(self, home: NodeHome):
        self.home = home
        self.methods = registry.load()

    def _down(self) -> NodeDownError:
        if not self.home.apisecret_file.exists():
            return NodeDownError(f"no node at {self.home.root} (never started): `bitdust start` starts one")
        if not node.is_running(self.home):
            return NodeDownError(f"the node at {self.home.root} is not running: `bitdust start` starts it")
        return NodeDownError(f"the node at {self.home.root} is running but its API does not answer "
                             f"({node.api_url(self.home)}); `bitdust start` waits until it is healthy")

    def raw(self, method_name: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, envelope) of one API method, called through its REST route."""
        method = self.methods.get(method_name)
        if method is None or not method.routes:
            raise CliError(f"{method_name} is not a REST API method", EXIT_USAGE)
        route = next((r for r in method.routes if not r.path_params), method.routes[0])
        path = route.pattern
        for name in route.path_params:
            path = path.replace(f"(?P<{name}>[^/]+)", urllib.parse.quote(str(kwargs.pop(name, "")), safe=""))
        if not self.home.apisecret_file.exists():
            raise self._down()
        try:
            if route.verb == "GET":
                query = urllib.parse.urlencode({k: _text(v) for k, v in kwargs.items() if v is not None})
                return node.call_api(self.home, "GET", path + ("?" + query if query else ""), timeout=CALL_TIMEOUT)
            return node.call_api(self.home, route.verb, path, kwargs, timeout=CALL_TIMEOUT)
        except (OSError, ValueError) as err:
            if isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError):
                raise CliError(f"{method_name}: the node did not answer in {CALL_TIMEOUT:g}s", EXIT_FAILED,
                               "timeout") from None
            raise self._down() from None

    def call(self, method_name: str, **kwargs: Any) -> Any:
        """The `result` of one API method; raises `CallFailedError` on an error envelope."""
        status, doc = self.raw(method_name, **kwargs)
        if status != 200 or doc.get("status") != "OK":
            raise CallFailedError(method_name, status, doc)
        return doc.get("result")

    async def acall(self, method_name: str, **kwargs: Any) -> Any:
        """`call` off the event loop."""
        return await asyncio.to_thread(self.call, method_name, **kwargs)

    def ws_url(self) -> str:
        port = ConfigStore(self.home.options_file).get("interface/api/web-socket-port")
        return f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode({"api_secret": self.home.api_secret()})

    @asynccontextmanager
    async def events(self) -> AsyncIterator[EventStream]:
        """The node's events, from the moment this is entered (connect before starting a transfer)."""
        if netns.namespace_of(self.home.run):
            raise CliError("following events of a node in a network namespace is not supported; "
                           "use --no-follow or run the command inside the namespace")
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(self.ws_url(), heartbeat=30, max_msg_size=0) as sock:
                    yield EventStream(sock)
        except aiohttp.ClientConnectionError:
            raise self._down() from None


class EventStream:
    """Events pushed on one WebSocket."""

    def __init__(self, sock: Any):
        self.sock = sock

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event (`{"event_id", "data", "created"}`), or None when none came in `timeout` seconds."""
        import aiohttp

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                msg = await asyncio.wait_for(self.sock.receive(), left)
            except asyncio.TimeoutError:
                return None
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                raise CliError("the node closed the event stream (stopped?)", EXIT_FAILED, "events_closed")
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                doc = codec.loads(msg.data)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("type") == "event" and isinstance(doc.get("payload"), dict):
                return doc["payload"]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return codec.dumps(value).decode()
    return str(value)
