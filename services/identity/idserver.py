"""The identity server: HTTP on 127.0.0.1, serving and accepting signed identity documents.

    GET  /<name>.xml   the stored document (text/xml), 404 if unknown
    GET  /             the names served, as JSON
    POST /upload       body: the signed XML document; 200 {"name", "revision", "changed"},
                       else {"error": {"message", "reason"}} with 400/409/413

Runs inside the identity process when `services/identity-server/enabled` is true.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.identity.idstore import IdServerStore, UploadRefusedError

log = logging.getLogger(__name__)

MAX_UPLOAD = 64 * 1024
STORE_KEY = web.AppKey("store", IdServerStore)
LOCK_KEY = web.AppKey("lock", asyncio.Lock)


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "reason": reason}}, status=status)


async def _get_identity(request: web.Request) -> web.StreamResponse:
    filename = request.match_info["filename"]
    if not filename.endswith(".xml"):
        return _error(404, "not_found", "identity documents are served as /<name>.xml")
    raw = request.app[STORE_KEY].read(filename[:-4])
    if raw is None:
        return _error(404, "identity_not_found", f"no identity {filename} here")
    return web.Response(body=raw, content_type="text/xml", charset="utf-8")


async def _list(request: web.Request) -> web.Response:
    return web.json_response({"identities": request.app[STORE_KEY].names()})


async def _upload(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_UPLOAD:
        return _error(413, "too_large", f"identity documents are limited to {MAX_UPLOAD} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "too_large", f"identity documents are limited to {MAX_UPLOAD} bytes")
    # One upload at a time: the name/revision checks and the write must not interleave.
    async with request.app[LOCK_KEY]:
        try:
            result = request.app[STORE_KEY].accept(raw)
        except UploadRefusedError as exc:
            return _error(exc.status, exc.reason, str(exc))
    return web.json_response({"name": result.name, "revision": result.revision, "changed": result.changed})


def make_app(store: IdServerStore) -> web.Application:
    app = web.Application(client_max_size=MAX_UPLOAD)
    app[STORE_KEY] = store
    app[LOCK_KEY] = asyncio.Lock()
    app.router.add_get("/", _list)
    app.router.add_post("/upload", _upload)
    app.router.add_get("/{filename}", _get_identity)
    return app


class IdServer:
    """One running identity server; `start`/`stop` follow the options."""

    def __init__(self, store: IdServerStore, port: int, bind: str = "127.0.0.1"):
        self.store = store
        self.port = port
        self.bind = bind
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        runner = web.AppRunner(make_app(self.store), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.bind, self.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("identity server listening on %s:%d", self.bind, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("identity server on port %d stopped", self.port)
