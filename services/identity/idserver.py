"""The identity server: HTTP/1.1 serving and accepting signed identity documents.

    GET  /<name>.xml   the stored document (text/xml), 404 if unknown
    GET  /             the names served, as JSON
    POST /upload       body: the signed XML document; 200 {"name", "revision", "changed"},
                       else {"error": {"message", "reason"}} with 400/409/411/413

Runs inside the identity process when `services/identity-server/enabled` is true, on
`services/identity-server/listen-host` (all interfaces by default).

A plain HTTP/1.1 server on asyncio streams, one request per connection (`Connection: close`), not
aiohttp: three routes need no more, and aiohttp would cost the identity process about 12 MB. It
faces the network, so all a client can make it hold is bounded before anything is checked:
`max_connections` at once (more are closed unanswered), `MAX_HEAD` bytes of request line and
headers (431), a body only as long as its `Content-Length` and at most `MAX_UPLOAD` bytes (411 and
413, refused before a byte of it is read), and `request_timeout` seconds to send it all (408).
An upload's signature check and write run in a worker thread, one upload at a time. After its
answer the server half-closes and drops what the client still sends (at most `MAX_LINGER` bytes
for a second), so that a refused body does not turn the close into a reset that loses the answer.
"""

from __future__ import annotations

import asyncio
import http
import logging
from urllib.parse import unquote

from common import codec
from services.identity.http11 import HeadError, parse_head
from services.identity.idstore import IdServerStore, UploadRefusedError

log = logging.getLogger(__name__)

MAX_UPLOAD = 64 * 1024
MAX_HEAD = 16 * 1024
MAX_CONNECTIONS = 256
REQUEST_TIMEOUT = 10.0
MAX_LINGER = 1024 * 1024
"""What is read and dropped after the answer, at most (see `IdServer._linger`)."""

Answer = tuple[int, str, bytes]
"""(HTTP status, content type, body)."""


class RequestError(Exception):
    """A request answered with an error document: `status` and `reason` go back to the client."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status = status
        self.reason = reason


def error_answer(status: int, reason: str, message: str) -> Answer:
    return status, "application/json", codec.dumps({"error": {"message": message, "reason": reason}})


def encode_answer(answer: Answer) -> bytes:
    status, content_type, body = answer
    head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class IdServer:
    """One running identity server; `start`/`stop` follow the options."""

    def __init__(self, store: IdServerStore, port: int, bind: str = "127.0.0.1",
                 max_connections: int = MAX_CONNECTIONS, request_timeout: float = REQUEST_TIMEOUT):
        self.store = store
        self.port = port
        self.bind = bind
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._upload_lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.bind, self.port, limit=MAX_HEAD,
                                                  reuse_address=True)
        log.info("identity server listening on %s:%d", self.bind, self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # each handler then ends at once: its read fails
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=self.request_timeout)
        await self._server.wait_closed()
        self._server = None
        log.info("identity server on port %d stopped", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_connections:
            writer.close()
            return
        self._writers.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            try:
                answer = await asyncio.wait_for(self._answer(reader, writer), self.request_timeout)
            except asyncio.TimeoutError:
                answer = error_answer(408, "request_timeout", f"send the request within {self.request_timeout:g}s")
            except RequestError as exc:
                answer = error_answer(exc.status, exc.reason, str(exc))
            writer.write(encode_answer(answer))
            await writer.drain()
            await self._linger(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._writers.discard(writer)
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then read and drop what the client still sends until it closes too.

        Closing with bytes unread (a refused body) makes the system reset the connection, which
        can destroy the answer before the client reads it. Bounded: `MAX_LINGER` bytes, 1 second.
        """
        if not writer.can_write_eof():
            return
        writer.write_eof()
        try:
            await asyncio.wait_for(_discard(reader, MAX_LINGER), 1.0)
        except asyncio.TimeoutError:
            pass

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Answer:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise RequestError(431, "headers_too_large", f"request line and headers are limited to {MAX_HEAD} "
                                                         "bytes") from None
        try:
            start_line, fields = parse_head(head[:-4])
        except HeadError as exc:
            raise RequestError(400, "bad_request", str(exc)) from None
        parts = start_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            raise RequestError(400, "bad_request", f"not an HTTP/1.x request line: {start_line[:80]!r}")
        method, path = parts[0], unquote(parts[1].split("?", 1)[0])
        if path == "/upload":
            if method != "POST":
                raise RequestError(405, "method_not_allowed", "/upload takes POST")
            return await self._upload(reader, writer, fields)
        if method != "GET":
            raise RequestError(405, "method_not_allowed", f"{path[:80]} takes GET")
        if path == "/":
            return 200, "application/json", codec.dumps({"identities": self.store.names()})
        return self._identity(path[1:])

    def _identity(self, filename: str) -> Answer:
        if "/" in filename or not filename.endswith(".xml"):
            raise RequestError(404, "not_found", "identity documents are served as /<name>.xml")
        raw = self.store.read(filename[:-4])
        if raw is None:
            raise RequestError(404, "identity_not_found", f"no identity {filename[:80]} here")
        return 200, "text/xml; charset=utf-8", raw

    async def _upload(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      fields: dict[str, str]) -> Answer:
        declared = fields.get("content-length", "")
        if "transfer-encoding" in fields or not declared.isdigit():
            raise RequestError(411, "length_required", "send the document with a Content-Length")
        if int(declared) > MAX_UPLOAD:
            raise RequestError(413, "too_large", f"identity documents are limited to {MAX_UPLOAD} bytes")
        if fields.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits a second for this before a large body
        raw = await reader.readexactly(int(declared))
        # One upload at a time: the name/revision checks and the write must not interleave. The
        # signature check and the durable write stay off the event loop.
        async with self._upload_lock:
            try:
                result = await asyncio.to_thread(self.store.accept, raw)
            except UploadRefusedError as exc:
                raise RequestError(exc.status, exc.reason, str(exc)) from None
        return 200, "application/json", codec.dumps(
            {"name": result.name, "revision": result.revision, "changed": result.changed})


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    while limit > 0:
        chunk = await reader.read(min(limit, 64 * 1024))
        if not chunk:
            return
        limit -= len(chunk)
