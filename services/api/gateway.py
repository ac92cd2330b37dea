"""The HTTP edge: REST on :8180 and WebSocket on :8280, both on 127.0.0.1 only.

Every request is authenticated with the node's API secret, routed by the method registry,
validated against the method's signature, answered with the reference envelope and a real HTTP
status. Methods owned by the api process are called in-process; the others over the bus.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from common import codec, registry, subjects
from common.bus import encode_reply
from common.endpoint import Reply, tagged_endpoints
from common.errors import AuthError, InvalidArgumentError, NodeError, NotBuiltError, NotFoundError
from common.process import ProcessContext
from services.api import metrics
from services.api.openapi import openapi_document
from services.api.service import AFTER_RESPONSE, ApiService
from services.api.ui_routes import UiGate

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 8 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
LONG_TIMEOUT = 3600.0
WS_ONLY = ("enable_model_listener", "disable_model_listener", "request_model_data")

SERVICE_KEY = web.AppKey("service", ApiService)
# Marks the REST application: only REST answers follow `interface/api/legacy-status-codes`.
REST_KEY = web.AppKey("rest", bool)
METHOD_KEY = web.RequestKey("api_method", str)
"""The API method a request was routed to, for `bitdust_api_requests_total`."""
LEGACY_STATUS_OPTION = "interface/api/legacy-status-codes"


def envelope_ok(doc: dict[str, Any], began: float) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "OK"}
    if doc.get("result") is not None:
        out["result"] = doc["result"]
    if doc.get("message") is not None:
        out["message"] = doc["message"]
    out["execution"] = f"{time.perf_counter() - began:.6f}"
    return out


def envelope_error(err: NodeError, began: float) -> dict[str, Any]:
    return envelope_from_wire(err.to_wire(), began)


def envelope_from_wire(doc: dict[str, Any], began: float) -> dict[str, Any]:
    """The reference error envelope of a bus error document."""
    error = doc.get("error") or {}
    return {"status": "ERROR", "errors": [error.get("message") or "error"],
            "reason": error.get("reason") or "internal_error", "execution": f"{time.perf_counter() - began:.6f}"}


def wire_status(doc: dict[str, Any]) -> int:
    """The HTTP status of a bus error document."""
    return int((doc.get("error") or {}).get("status") or 500)


def _timeout_for(kwargs: dict[str, Any]) -> float:
    if kwargs.get("wait_result"):
        return LONG_TIMEOUT
    budget = DEFAULT_TIMEOUT
    for key in ("timeout", "wait_timeout", "polling_timeout", "ping_timeout", "message_ack_timeout"):
        value = kwargs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            budget = max(budget, float(value) * max(1, int(kwargs.get("retries") or 1)) + 15)
    return budget


@functools.lru_cache(maxsize=256)
def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return True  # unix socket / in-process test client
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


class Gateway:
    """Owns the REST and WebSocket servers of one node."""

    def __init__(self, service: ApiService, ctx: ProcessContext):
        self.service = service
        self.ctx = ctx
        self.registry = registry.load()
        # Read once, not per request: the node writes its secret only when it is first created.
        self._secret = ctx.home.api_secret().encode()
        self.ui = UiGate(self._secret, int(ctx.config.get("interface/api/rest-http-port")),
                         int(ctx.config.get("interface/api/web-socket-port")), ctx.home.root)
        self.local = {spec.name: func for spec, func in tagged_endpoints(service).items() if not spec.internal}
        self._runners: list[web.AppRunner] = []
        self._sockets: set[web.WebSocketResponse] = set()
        self._ws_models: dict[web.WebSocketResponse, set[str]] = {}
        ctx.metrics.register(lambda: metrics.service_state_samples(
            {name: machine.state for name, machine in service.machines.items()}))

    # ---- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        rest = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        rest[SERVICE_KEY] = self.service
        rest[REST_KEY] = True
        self.ui.add_routes(rest)
        rest.router.add_route("*", "/{tail:.*}", self._handle_rest)
        ws = web.Application(middlewares=[self._guard])
        ws.router.add_get("/{tail:.*}", self._handle_ws)
        for app, key in ((rest, "interface/api/rest-http-port"), (ws, "interface/api/web-socket-port")):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, HOST, int(self.ctx.config.get(key)), reuse_address=True).start()
            self._runners.append(runner)
        self.service.events.listen(self._push_event)
        await self.ctx.bus.nc.subscribe(subjects.MODELS_ALL, cb=self._on_model)
        log.info("REST on %s:%s, WebSocket on %s:%s", HOST, self.ctx.config.get("interface/api/rest-http-port"),
                 HOST, self.ctx.config.get("interface/api/web-socket-port"))

    async def stop(self) -> None:
        for sock in list(self._sockets):
            await sock.close()
        for runner in self._runners:
            await runner.cleanup()

    # ---- auth ----------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        began = time.perf_counter()
        try:
            if not _is_loopback(request.remote):
                raise AuthError("only local clients may use the API", reason="forbidden", status=403)
            given = request.headers.get("api_secret") or request.headers.get("X-Api-Secret") \
                or _bearer(request.headers.get("Authorization")) or request.query.get("api_secret")
            self.ui.authorize(request, request.app.get(REST_KEY, False), given)
        except NodeError as err:
            status = self._rest_status(err.status) if request.app.get(REST_KEY) else err.status
            self._count(request, status)
            return web.json_response(envelope_error(err, began), status=status, dumps=_dumps)
        try:
            response = await handler(request)
            self._count(request, response.status)
            return response
        except web.HTTPException:
            raise
        except Exception:  # noqa: BLE001 - the edge: an answer in the envelope, never aiohttp's bare 500
            log.exception("%s %s failed", request.method, request.path)
            failure = NodeError("internal error")
            status = self._rest_status(failure.status) if request.app.get(REST_KEY) else failure.status
            return web.json_response(envelope_error(failure, began), status=status, dumps=_dumps)

    def _count(self, request: web.Request, status: int) -> None:
        """`bitdust_api_requests_total`: by API method name (a bounded set), never by raw path."""
        method = request.get(METHOD_KEY) or ("unknown" if request.app.get(REST_KEY) else "websocket")
        self.ctx.metrics.inc("bitdust_api_requests_total", method=method, status=str(status))

    def _count_call(self, method: str, response: dict[str, Any]) -> None:
        """The same for one WebSocket `api_call` (its envelope carries the status as `code`)."""
        self.ctx.metrics.inc("bitdust_api_requests_total", method=method, status=str(response.get("code", 200)))

    def _rest_status(self, status: int) -> int:
        """The HTTP status of a REST envelope: always 200 under the legacy option."""
        # Read per request, so a `config_set` or a `config-changed` reload takes effect at once.
        return 200 if self.ctx.config.get(LEGACY_STATUS_OPTION) else status

    # ---- dispatch ------------------------------------------------------------------------

    async def call(self, method: registry.Method, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Run one API method; return the bus-style document (`result`/`message` or `error`)."""
        if method.name in self.local:
            try:
                value = await self.local[method.name](**kwargs)
                return codec.loads(encode_reply(value)) if isinstance(value, Reply) else {"result": value}
            except NodeError as err:
                return err.to_wire()
            except Exception:  # noqa: BLE001 - the edge: never leak internals
                log.exception("%s failed", method.name)
                return NodeError("internal error").to_wire()
        if method.owner not in subjects.PROCESSES:
            return NotBuiltError(f"{method.name} is not implemented yet").to_wire()
        try:
            body = codec.dumps(kwargs)
        except (TypeError, ValueError):
            # orjson refuses integers beyond 64 bits (inside `data`, for instance) and lone surrogates.
            return InvalidArgumentError("a parameter value cannot be encoded (an integer beyond 64 bits?)",
                                        reason="invalid_argument").to_wire()
        try:
            return await self.ctx.bus.request_raw(subjects.api(method.owner, method.name), body,
                                                  timeout=_timeout_for(kwargs))
        except NodeError as err:
            return err.to_wire()

    async def call_collecting(self, method: registry.Method, kwargs: dict[str, Any]
                              ) -> tuple[dict[str, Any], list[Callable[[], Awaitable[None]]]]:
        """`call`, plus the actions the method asked to run once its answer has been sent."""
        actions: list[Callable[[], Awaitable[None]]] = []
        token = AFTER_RESPONSE.set(actions)
        try:
            return await self.call(method, kwargs), actions
        finally:
            AFTER_RESPONSE.reset(token)

    async def _handle_rest(self, request: web.Request) -> web.StreamResponse:
        began = time.perf_counter()
        if request.method == "GET" and request.path in ("/openapi.json", "/openapi/v1"):
            return web.json_response(openapi_document(self.registry), dumps=_dumps)
        if request.method == "GET" and request.path == "/metrics":
            request[METHOD_KEY] = "metrics"
            body, content_type = metrics.render(await metrics.collect(self.ctx), self.ctx.bus.nc.is_connected)
            return web.Response(body=body, headers={"Content-Type": content_type})
        try:
            found = self.registry.match(request.method, request.path)
            if found is None:
                raise NotFoundError(f"no API route {request.path}", reason="route_not_found")
            if found is False:
                raise NodeError(f"{request.method} is not allowed on {request.path}", reason="method_not_allowed",
                                status=405)
            method, path_params = found  # type: ignore[misc]
            request[METHOD_KEY] = method.name
            raw: dict[str, Any] = dict(request.query)
            from_text = True
            if request.method != "GET" and request.can_read_body:
                body = await request.read()
                if body.strip():
                    try:
                        parsed = codec.loads(body)
                    except ValueError:
                        raise InvalidArgumentError("request body is not valid JSON") from None
                    if not isinstance(parsed, dict):
                        raise InvalidArgumentError("request body must be a JSON object")
                    raw.update(method.adopt_body(parsed))
                    from_text = False
            raw.update(path_params)
            kwargs = method.bind(raw, from_text=from_text)
        except NodeError as err:
            return web.json_response(envelope_error(err, began), status=self._rest_status(err.status),
                                     dumps=_dumps)
        doc, actions = await self.call_collecting(method, kwargs)
        response = self._respond(doc, began)
        if actions:
            await response.prepare(request)
            await response.write_eof()
            for action in actions:
                asyncio.ensure_future(action())
        return response

    def _respond(self, doc: dict[str, Any], began: float) -> web.Response:
        if "error" in doc:
            return web.json_response(envelope_from_wire(doc, began), status=self._rest_status(wire_status(doc)),
                                     dumps=_dumps)
        return web.json_response(envelope_ok(doc, began), dumps=_dumps)

    # ---- WebSocket -----------------------------------------------------------------------

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        sock = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_BODY)
        await sock.prepare(request)
        self._sockets.add(sock)
        self._ws_models[sock] = set()
        try:
            async for msg in sock:
                if msg.type == WSMsgType.TEXT:
                    asyncio.ensure_future(self._ws_message(sock, msg.data))
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(sock)
            self._ws_models.pop(sock, None)
        return sock

    async def _ws_message(self, sock: web.WebSocketResponse, text: str) -> None:
        began = time.perf_counter()
        call_id: Any = None
        counted = "unknown"
        try:
            try:
                message = codec.loads(text)
            except ValueError:
                raise InvalidArgumentError("message is not valid JSON") from None
            if not isinstance(message, dict):
                raise InvalidArgumentError("message must be a JSON object")
            call_id = message.get("call_id")
            if message.get("command") != "api_call":
                raise InvalidArgumentError("unknown command, expected api_call", reason="unknown_command")
            name = message.get("method")
            method = self.registry.get(name) if isinstance(name, str) else None
            if method is None:
                raise NotFoundError(f"no API method {name}", reason="method_not_found")
            counted = method.name
            raw = message.get("kwargs") or {}
            if not isinstance(raw, dict):
                raise InvalidArgumentError("kwargs must be a JSON object")
            kwargs = method.bind(raw, from_text=False)
            if method.name in WS_ONLY:
                doc = await self._ws_model_call(sock, method.name, kwargs)
            else:
                doc, actions = await self.call_collecting(method, kwargs)
                response = self._ws_envelope(doc, began)
                self._count_call(counted, response)
                await self._ws_send(sock, {"type": "api_call", "payload": {"call_id": call_id, "response": response}})
                for action in actions:
                    asyncio.ensure_future(action())
                return
        except NodeError as err:
            doc = err.to_wire()
        response = self._ws_envelope(doc, began)
        self._count_call(counted, response)
        await self._ws_send(sock, {"type": "api_call", "payload": {"call_id": call_id, "response": response}})

    @staticmethod
    def _ws_envelope(doc: dict[str, Any], began: float) -> dict[str, Any]:
        if "error" in doc:
            # No HTTP status on a WebSocket: the envelope carries it as `code`.
            return dict(envelope_from_wire(doc, began), code=wire_status(doc))
        return envelope_ok(doc, began)

    async def _ws_model_call(self, sock: web.WebSocketResponse, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        model_name = kwargs["model_name"]
        models = self._ws_models.setdefault(sock, set())
        if name == "disable_model_listener":
            models.discard(model_name)
            return {"result": {"model_name": model_name, "listening": False}}
        if name == "enable_model_listener":
            models.add(model_name)
            if not kwargs.get("request_all"):
                return {"result": {"model_name": model_name, "listening": True}}
        items = await self.service.model_items(model_name, kwargs.get("query_details"))
        for item in items:
            await self._ws_send(sock, {"type": "model", "payload": {
                "name": model_name, "id": item["id"], "data": item["data"], "created": time.time()}})
        return {"result": {"model_name": model_name, "listening": model_name in models, "items": len(items)}}

    async def _ws_send(self, sock: web.WebSocketResponse, doc: dict[str, Any]) -> None:
        if sock.closed:
            return
        try:
            await sock.send_str(codec.dumps(doc).decode())
        except (ConnectionError, RuntimeError):
            pass

    def _push_event(self, event: dict[str, Any]) -> None:
        doc = {"type": "event", "payload": {"event_id": event["event_id"], "data": event.get("data"),
                                            "created": event.get("created")}}
        for sock in list(self._sockets):
            asyncio.ensure_future(self._ws_send(sock, doc))

    async def push_stream_message(self, payload: Any) -> int:
        """Send one `stream_message` to every open WebSocket; return how many there were."""
        doc = {"type": "stream_message", "payload": payload}
        sockets = [sock for sock in self._sockets if not sock.closed]
        await asyncio.gather(*(self._ws_send(sock, doc) for sock in sockets))
        return len(sockets)

    async def _on_model(self, msg: Any) -> None:
        try:
            payload = codec.loads(msg.data)
        except ValueError:
            return
        name = payload.get("name") if isinstance(payload, dict) else None
        for sock, models in list(self._ws_models.items()):
            if name in models:
                await self._ws_send(sock, {"type": "model", "payload": payload})


def _dumps(obj: Any) -> str:
    return codec.dumps(obj).decode()


def _bearer(authorization: str | None) -> str:
    """The secret of an `Authorization: Bearer <secret>` header (how Prometheus sends one), or ''."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
