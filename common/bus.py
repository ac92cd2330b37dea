"""The local NATS bus: connecting, calling other processes, serving tagged endpoints.

This module is the one edge between the bus and domain code: requests are decoded here,
`NodeError`s become `{"error": …}` replies here, and replies become `NodeError`s again on the
calling side.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from typing import Any, Awaitable, Callable

import nats
import nats.micro
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import Request

from common import codec, registry, subjects
from common.endpoint import EndpointSpec, Reply, never_suspends, tagged_endpoints
from common.errors import DeadlineError, InvalidArgumentError, NodeError, NotBuiltError, UnavailableError, from_wire

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
VERSION = "0.1.0"
MAX_BUS_PAYLOAD = 24 * 1024 * 1024
"""nats-server `max_payload` (deploy/templates/nats.conf.tmpl): a packet's largest payload and header
(`common.packet`) plus the JSON around them fit, so whatever a peer may send can cross the bus."""


META_HEADER = "Bitdust-Meta"
"""Header that carries the JSON meta of a binary bus request; the body is the raw payload."""
REPLY_HEADER = "Bitdust-Reply"
"""The same for a binary reply: a distinct name, as nats-py's plain `respond` echoes request headers."""
NO_RESPONDERS_STATUS = "503"
"""The status nats-server puts in the header of its answer to a request nobody subscribes to."""


def binary_meta(msg: Any, header: str = META_HEADER) -> dict[str, Any] | None:
    """The JSON meta of a binary bus message, or None for a plain JSON message."""
    text = (msg.headers or {}).get(header) if getattr(msg, "headers", None) else None
    if not text:
        return None
    try:
        meta = codec.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


class Bus:
    """A connection to the node's bus with the calls every process makes."""

    def __init__(self, nc: Client, process: str):
        self.nc = nc
        self.process = process
        self._tasks: set[asyncio.Task[Any]] = set()
        # Replies to this connection's requests: one wildcard subscription, one future per request.
        self._reply_prefix = ""
        self._replies: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count()

    @classmethod
    async def connect(cls, url: str, token: str, process: str, **options: Any) -> "Bus":
        """Connect with the node's bus token; reconnects forever while the node runs."""
        nc = await nats.connect(
            url,
            token=token,
            name=f"bitdust-{process}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            allow_reconnect=True,
            **options,
        )
        return cls(nc, process)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(UnavailableError("the local bus is closed"))
        if self.nc.is_connected or self.nc.is_reconnecting:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - closing anyway
                await self.nc.close()

    async def _request(self, subject: str, payload: bytes, timeout: float,
                       headers: dict[str, str] | None = None) -> Msg:
        """One NATS request; a missing responder, a timeout or a closed bus become `NodeError`s.

        Unlike nats-py's `request`, no `asyncio.wait_for` (a task switch and a wrapper per call)
        and no random token per call: a counter names the reply subject, a timer handle fails
        the future when the time is up.
        """
        if not self._reply_prefix:
            await self._subscribe_replies()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._replies[token] = future
        timer = loop.call_later(timeout, _expire, future, subject, timeout)
        try:
            await self.nc.publish(subject, payload, reply=self._reply_prefix + token, headers=headers)
            msg = await future
        except nats.errors.ConnectionClosedError:
            raise UnavailableError("the local bus is closed") from None
        except nats.errors.MaxPayloadError:
            raise _too_large(subject, len(payload)) from None
        finally:
            timer.cancel()
            del self._replies[token]
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS_STATUS and not msg.data:
            raise UnavailableError(f"no process serves {subject} now")
        return msg

    async def _subscribe_replies(self) -> None:
        # Named before the first await: a request made meanwhile queues its PUB after this SUB.
        self._reply_prefix = self.nc.new_inbox() + "."
        try:
            await self.nc.subscribe(self._reply_prefix + "*", cb=self._on_reply)
        except Exception:
            self._reply_prefix = ""
            raise

    async def _on_reply(self, msg: Msg) -> None:
        future = self._replies.get(msg.subject[len(self._reply_prefix):])
        if future is not None and not future.done():
            future.set_result(msg)

    async def request_raw(self, subject: str, payload: bytes, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Send a request and return the decoded reply document (result or error).

        A binary reply (`respond_binary`) comes back as its meta with the body under `payload_raw`.
        """
        msg = await self._request(subject, payload, timeout)
        reply_meta = binary_meta(msg, REPLY_HEADER)
        if reply_meta is not None:
            return reply_meta if "error" in reply_meta else dict(reply_meta, payload_raw=msg.data)
        if msg.headers and msg.headers.get("Nats-Service-Error-Code"):
            code = msg.headers.get("Nats-Service-Error-Code", "500")
            return {"error": {"message": msg.headers.get("Nats-Service-Error", "error"),
                              "reason": "internal_error", "status": int(code) if code.isdigit() else 500}}
        try:
            doc = codec.loads(msg.data)
        except ValueError:
            return {"error": {"message": "malformed reply", "reason": "internal_error", "status": 500}}
        return doc if isinstance(doc, dict) else {"result": doc}

    async def request_binary(self, subject: str, meta: dict[str, Any], body: bytes | bytearray | memoryview,
                             timeout: float = DEFAULT_TIMEOUT) -> tuple[dict[str, Any] | None, bytes]:
        """Send raw bytes with a JSON meta header; return the reply's meta (None if plain) and body.

        Large payloads (data fragments) cross the bus this way, with no base64 or JSON around them.
        Raises the `NodeError` the responder put in its meta, or one for no responder / timeout.
        """
        msg = await self._request(subject, bytes(body), timeout, {META_HEADER: codec.dumps(meta).decode()})
        reply_meta = binary_meta(msg, REPLY_HEADER)
        if reply_meta is not None and "error" in reply_meta:
            raise from_wire(reply_meta)
        return reply_meta, msg.data

    async def respond_binary(self, msg: Any, meta: dict[str, Any], body: bytes | bytearray | memoryview = b"") -> None:
        """Answer a request with raw bytes and a JSON meta header."""
        if msg.reply:
            await self.nc.publish(msg.reply, bytes(body), headers={REPLY_HEADER: codec.dumps(meta).decode()})

    async def call(self, subject: str, kwargs: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Call an endpoint and return its result; raises the `NodeError` it raised."""
        doc = await self.request_raw(subject, codec.dumps(kwargs or {}), timeout)
        if "error" in doc:
            raise from_wire(doc)
        return doc.get("result")

    async def call_internal(self, process: str, verb: str, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> Any:
        """Call `<process>.<verb>`."""
        return await self.call(subjects.internal(process, verb), kwargs, timeout)

    async def publish_event(self, event_id: str, data: Any = None) -> None:
        """Publish `evt.<event_id>`; never raises (events are best effort)."""
        await self._publish(subjects.event(event_id), {"event_id": event_id, "data": data, "created": time.time()})

    async def publish_model(self, name: str, item_id: str, data: Any, deleted: bool = False) -> None:
        """Publish one model update for WebSocket listeners."""
        payload: dict[str, Any] = {"name": name, "id": item_id, "data": data, "created": time.time()}
        if deleted:
            payload["deleted"] = True
        await self._publish(subjects.model(name), payload)

    async def _publish(self, subject: str, payload: Any) -> None:
        try:
            await self.nc.publish(subject, codec.dumps(payload))
        except Exception as exc:  # noqa: BLE001 - best effort
            log.warning("publish to %s failed: %s", subject, exc)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task owned by this bus connection (cancelled on close)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _expire(future: asyncio.Future[Msg], subject: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(DeadlineError(f"{subject} did not answer in {timeout:g}s"))


def encode_reply(value: Any) -> bytes:
    """Encode an endpoint's return value as a bus reply."""
    if isinstance(value, Reply):
        doc: dict[str, Any] = {"result": value.result}
        if value.message is not None:
            doc["message"] = value.message
        return codec.dumps(doc)
    return codec.dumps({"result": value})


async def dispatch(func: Callable[..., Awaitable[Any]], data: bytes, name: str,
                   signature: inspect.Signature | None = None) -> bytes:
    """Decode a request, call `func`, encode its result or its error."""
    try:
        try:
            kwargs = codec.loads(data) if data else {}
        except ValueError:
            raise InvalidArgumentError("request is not valid JSON") from None
        if not isinstance(kwargs, dict):
            raise InvalidArgumentError("request must be a JSON object of named parameters")
        try:
            (signature or inspect.signature(func)).bind(**kwargs)
        except TypeError as err:
            raise InvalidArgumentError(f"{name}: {err}") from None
        return encode_reply(await func(**kwargs))
    except NodeError as err:
        return codec.dumps(err.to_wire())
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the edge: log, answer a generic 500
        log.exception("endpoint %s failed", name)
        return codec.dumps(NodeError("internal error").to_wire())


async def serve(bus: Bus, handler: object, description: str = "") -> nats.micro.service.Service:
    """Register `handler`'s tagged methods as one `nats.micro` service named after the process."""
    service = await nats.micro.add_service(
        bus.nc, name=bus.process, version=VERSION, description=description or f"bitdust {bus.process}"
    )
    endpoints = tagged_endpoints(handler)
    served = {spec.name for spec in endpoints if not spec.internal}
    for method in registry.load().owned_by(bus.process):
        if method.name not in served:
            # Owned but not built yet: answer 501 rather than leave the caller with "unavailable".
            endpoints[EndpointSpec(method.name, False)] = _not_built(method.name)
    for spec, func in sorted(endpoints.items(), key=lambda item: item[0].name):
        subject = (
            subjects.internal(bus.process, spec.name) if spec.internal else subjects.api(bus.process, spec.name)
        )
        await service.add_endpoint(
            name=spec.name.replace(".", "_"), subject=subject, handler=_make_handler(bus, func, spec.name)
        )
    # Make sure the server has every subscription before anyone is told this process is up.
    await bus.nc.flush()
    return service


def _make_handler(bus: Bus, func: Callable[..., Awaitable[Any]], name: str) -> Callable[[Request], Awaitable[None]]:
    signature = inspect.signature(func)

    async def run(request: Request) -> None:
        reply = await dispatch(func, request.data, name, signature)
        if len(reply) > bus.nc.max_payload:
            # Fail fast: an unsendable reply would leave the caller waiting for its timeout.
            reply = codec.dumps(_too_large(f"the reply of {name}", len(reply)).to_wire())
        try:
            await request.respond(reply)
        except Exception as exc:  # noqa: BLE001 - the caller may be gone
            log.debug("reply to %s lost: %s", name, exc)

    if never_suspends(func):
        # It cannot wait on anything, so it is answered in the subscription's task: no task per request.
        return run

    async def handle(request: Request) -> None:
        # Each request runs in its own task so a slow call never blocks the endpoint.
        bus.spawn(run(request))

    return handle


def _not_built(name: str) -> Callable[..., Awaitable[Any]]:
    async def not_built(**_: Any) -> Any:
        raise NotBuiltError(f"{name} is not implemented yet")

    return not_built


def _too_large(what: str, size: int) -> NodeError:
    return NodeError(f"{what} is {size} bytes, over the local bus limit of {MAX_BUS_PAYLOAD} bytes",
                     reason="payload_too_large", status=413)
