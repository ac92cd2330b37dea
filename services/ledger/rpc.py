"""JSON-RPC to the engine (`ledgerd`) on loopback, authenticated by the cookie it writes at start.

One HTTP/1.1 request per call on a fresh connection (`Connection: close`): calls are few (a poll
every fraction of a second, one per API call), and a connection that outlives an engine restart
would need its own recovery. The cookie is read again whenever the engine refuses it, since the
engine writes a new one at every start.
"""

from __future__ import annotations

import asyncio
import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from common.errors import NodeError, UnavailableError

TIMEOUT = 30.0
WARMING_UP = -28
"""The engine's code while it loads its block index or wallet."""


class EngineError(NodeError):
    """The engine refused a call; `code` is its RPC error code."""

    status = 409
    reason = "ledger_engine_refused"

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def engine_down(detail: str) -> UnavailableError:
    return UnavailableError(f"the blockchain engine is not reachable: {detail}", reason="ledger_engine_down")


class EngineRpc:
    """Calls the engine's JSON-RPC; raises `EngineError` (refused) or `UnavailableError` (down)."""

    def __init__(self, port: Callable[[], int], cookie_file: Path, wallet: str):
        self._port = port
        self._cookie_file = cookie_file
        self._wallet = wallet
        self._auth: str | None = None
        self._ids = 0

    def _read_cookie(self) -> str:
        try:
            return base64.b64encode(self._cookie_file.read_bytes().strip()).decode()
        except OSError:
            raise engine_down("no RPC cookie yet") from None

    async def call(self, method: str, *params: Any, wallet: bool = False, timeout: float = TIMEOUT) -> Any:
        """The result of `method(*params)`; `wallet` sends it to the node's wallet."""
        if self._auth is None:
            self._auth = self._read_cookie()
        status, body = await self._post(method, params, wallet, timeout)
        if status == 401:
            # The engine restarted and wrote a new cookie.
            self._auth = self._read_cookie()
            status, body = await self._post(method, params, wallet, timeout)
        if status == 401:
            raise engine_down("the RPC cookie is refused")
        try:
            doc = json.loads(body, parse_float=Decimal)
        except ValueError:
            raise engine_down(f"HTTP {status} without JSON") from None
        error = doc.get("error") if isinstance(doc, dict) else None
        if error:
            code = int(error.get("code") or 0)
            if code == WARMING_UP:
                raise UnavailableError(f"the blockchain engine is starting: {error.get('message')}",
                                       reason="ledger_engine_starting")
            raise EngineError(str(error.get("message") or "refused"), code)
        return doc.get("result")

    async def _post(self, method: str, params: tuple[Any, ...], wallet: bool, timeout: float) -> tuple[int, bytes]:
        self._ids += 1
        payload = json.dumps({"jsonrpc": "1.0", "id": self._ids, "method": method, "params": list(params)},
                             default=_json_default).encode()
        path = "/wallet/" + self._wallet if wallet else "/"
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {self._auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
        try:
            return await asyncio.wait_for(self._exchange(head.encode() + payload), timeout)
        except asyncio.TimeoutError:
            raise engine_down(f"{method} took more than {timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError) as err:
            # Refused, reset, or the engine died mid-answer (kill -9): down, the caller may retry.
            raise engine_down(str(err) or type(err).__name__) from None

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self._port())
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise ConnectionError("not an HTTP answer")
            length = -1
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await (reader.readexactly(length) if length >= 0 else reader.read())
            return int(parts[1]), body
        finally:
            writer.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # The engine takes amounts as strings too: exact, all 8 decimals kept.
        return f"{value:.8f}"
    raise TypeError(f"{type(value).__name__} is not JSON")
