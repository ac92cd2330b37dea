"""HTTP client of identity servers: download an identity, upload a signed one.

Errors are the node's error types, so callers can let them reach the API unchanged: an
unreachable server is 503 `identity_server_unavailable`, a refusal keeps the server's status and
reason (409 `name_taken`, 409 `stale_revision`, 400 `invalid_signature`, …).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from common.errors import NodeError, NotFoundError, UnavailableError
from services.identity.document import MAX_DOCUMENT_SIZE

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0


class IdServerClient:
    """One aiohttp session for every identity server the process talks to."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        # Nothing of aiohttp is touched before the first request: the identity process defers it.
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def download(self, idurl: str) -> bytes:
        """The XML at `idurl`; raises `NotFoundError` (reason `identity_not_found`)."""
        try:
            async with self._http().get(idurl, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise NotFoundError(f"identity server answered {resp.status} for {idurl}",
                                        reason="identity_not_found")
                raw = await resp.content.read(MAX_DOCUMENT_SIZE + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise NotFoundError(f"cannot download {idurl}: {exc or type(exc).__name__}",
                                reason="identity_not_found") from None
        if len(raw) > MAX_DOCUMENT_SIZE:
            raise NotFoundError(f"identity at {idurl} is too large", reason="identity_not_found")
        return raw

    async def upload(self, server: str, xml: str) -> dict[str, Any]:
        """POST a signed document to identity server `host:port`; returns its JSON answer."""
        url = f"http://{server}/upload"
        try:
            async with self._http().post(url, data=xml.encode("utf-8"),
                                         headers={"Content-Type": "text/xml; charset=utf-8"}) as resp:
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = {}
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UnavailableError(f"identity server {server} is unreachable: {exc or type(exc).__name__}",
                                   reason="identity_server_unavailable") from None
        if status == 200 and isinstance(body, dict):
            return body
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        message = f"identity server {server} refused the identity: {err.get('message') or status}"
        raise NodeError(message, reason=str(err.get("reason") or "identity_server_error"),
                        status=status if 400 <= status < 500 else 502)
