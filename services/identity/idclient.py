"""HTTP client of identity servers: download an identity, upload a signed one.

Errors are the node's error types, so callers can let them reach the API unchanged: an
unreachable server is 503 `identity_server_unavailable`, a refusal keeps the server's status and
reason (409 `name_taken`, 409 `stale_revision`, 400 `invalid_signature`, …).

A plain HTTP/1.1 exchange on an asyncio stream (one request per connection, `Connection: close`),
not aiohttp: the two requests it makes need no more, and aiohttp costs the identity process about
12 MB that a node which serves no identities would carry for nothing. Every answer is bounded
(`MAX_RESPONSE`) and every exchange has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from common import codec
from common.errors import NodeError, NotFoundError, UnavailableError
from services.identity.document import MAX_DOCUMENT_SIZE
from services.identity.http11 import HeadError, parse_head

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
MAX_HEAD = 16 * 1024
MAX_RESPONSE = MAX_DOCUMENT_SIZE + MAX_HEAD


class HttpError(Exception):
    """The server could not be reached or answered something that is not HTTP."""


async def http_request(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None,
                       timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 request. Raises `HttpError`."""
    try:
        return await asyncio.wait_for(_exchange(method, url, body, headers or {}), timeout)
    except asyncio.TimeoutError:
        raise HttpError(f"no answer in {timeout:g}s") from None
    except (OSError, ValueError, UnicodeError) as exc:
        raise HttpError(str(exc) or type(exc).__name__) from None


async def _exchange(method: str, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http(s) URL: {url[:200]}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    context: Any = None
    if tls:
        import ssl  # only for https identity servers

        context = ssl.create_default_context()
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close", "Accept-Encoding: identity",
                 f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        raw = await reader.read(MAX_RESPONSE + 1)
        while len(raw) <= MAX_RESPONSE:
            more = await reader.read(MAX_RESPONSE + 1 - len(raw))
            if not more:
                break
            raw += more
    finally:
        writer.close()
    if len(raw) > MAX_RESPONSE:
        raise HttpError("the answer is too large")
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole HTTP/1.x response read until the server closed. Raises `HttpError`."""
    head, sep, payload = raw.partition(b"\r\n\r\n")
    if not sep:
        raise HttpError("the answer has no end of headers")
    try:
        status_line, found = parse_head(head)
    except HeadError as exc:
        raise HttpError(str(exc)) from None
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or not fields[1].isdigit():
        raise HttpError(f"not an HTTP answer: {status_line[:80]!r}")
    if found.get("transfer-encoding", "").lower() == "chunked":
        payload = _unchunk(payload)
    elif found.get("content-length", "").isdigit():
        length = int(found["content-length"])
        if len(payload) < length:
            raise HttpError("the answer was cut short")
        payload = payload[:length]
    return int(fields[1]), payload


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            raise HttpError("malformed chunked answer")
        try:
            size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
        except ValueError:
            raise HttpError("malformed chunk size") from None
        if size == 0:
            return bytes(out)
        if len(rest) < size + 2:
            raise HttpError("the answer was cut short")
        out += rest[:size]
        data = rest[size + 2:]


class IdServerClient:
    """Downloads and uploads identities over plain HTTP/1.1 (see the module docstring)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        self._timeout = timeout

    async def close(self) -> None:
        return None

    async def download(self, idurl: str) -> bytes:
        """The XML at `idurl`; raises `NotFoundError` (reason `identity_not_found`)."""
        try:
            status, raw = await http_request("GET", idurl, timeout=self._timeout)
        except HttpError as exc:
            raise NotFoundError(f"cannot download {idurl}: {exc}", reason="identity_not_found") from None
        if status != 200:
            raise NotFoundError(f"identity server answered {status} for {idurl}", reason="identity_not_found")
        if len(raw) > MAX_DOCUMENT_SIZE:
            raise NotFoundError(f"identity at {idurl} is too large", reason="identity_not_found")
        return raw

    async def upload(self, server: str, xml: str) -> dict[str, Any]:
        """POST a signed document to identity server `host:port`; returns its JSON answer."""
        url = f"http://{server}/upload"
        try:
            status, raw = await http_request("POST", url, xml.encode("utf-8"),
                                             {"Content-Type": "text/xml; charset=utf-8"}, self._timeout)
        except HttpError as exc:
            raise UnavailableError(f"identity server {server} is unreachable: {exc}",
                                   reason="identity_server_unavailable") from None
        try:
            body = codec.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if status == 200 and isinstance(body, dict):
            return body
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        message = f"identity server {server} refused the identity: {err.get('message') or status}"
        raise NodeError(message, reason=str(err.get("reason") or "identity_server_error"),
                        status=status if 400 <= status < 500 else 502)
