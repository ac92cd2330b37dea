"""The bus adapter on a real nats-server: endpoints, errors, 501 stubs, fast failure."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.bus import MAX_BUS_PAYLOAD
from common.endpoint import Reply, endpoint
from common.errors import ConflictError, InvalidArgumentError, NodeError, UnavailableError
from common.process import ServiceBase
from tests.helpers import connect, running_service


class Echo(ServiceBase):
    @endpoint(internal=True)
    async def echo(self, text: str, times: int = 1) -> str:
        return text * times

    @endpoint(internal=True)
    async def fail(self) -> None:
        raise ConflictError("taken", reason="name_taken")

    @endpoint(internal=True)
    async def crash(self) -> None:
        raise RuntimeError("secret internals")

    @endpoint(internal=True)
    async def with_message(self) -> Reply:
        return Reply({"done": True}, "all good")

    @endpoint(internal=True)
    async def rendezvous(self) -> int:
        """Answers once two calls are inside at the same time: only if each runs in a task of its own."""
        self.inside = getattr(self, "inside", 0) + 1
        while self.inside < 2:
            await asyncio.sleep(0.01)
        return self.inside


async def test_endpoint_roundtrip_and_errors(bus_home):
    async with running_service(bus_home, "storage", Echo):
        bus = await connect(bus_home)
        try:
            assert await bus.call_internal("storage", "echo", text="ab", times=2) == "abab"
            with pytest.raises(NodeError) as conflict:
                await bus.call_internal("storage", "fail")
            assert (conflict.value.status, conflict.value.reason) == (409, "name_taken")
            with pytest.raises(NodeError) as crash:
                await bus.call_internal("storage", "crash")
            assert crash.value.status == 500 and "secret" not in crash.value.message
            with pytest.raises(InvalidArgumentError.__mro__[1]) as bad:
                await bus.call_internal("storage", "echo", nope=1)
            assert bad.value.status == 400
            doc = await bus.request_raw("storage.with_message", b"{}")
            assert doc == {"result": {"done": True}, "message": "all good"}
            with pytest.raises(NodeError) as unbuilt:
                await bus.call("api.storage.files_list", {})
            assert (unbuilt.value.status, unbuilt.value.reason) == (501, "not_implemented")
        finally:
            await bus.close()


async def test_waiting_endpoint_answers_requests_concurrently(bus_home):
    async with running_service(bus_home, "storage", Echo):
        bus = await connect(bus_home)
        try:
            both = await asyncio.gather(*(bus.call_internal("storage", "rendezvous", timeout=5) for _ in range(2)))
            assert both == [2, 2]
            assert await bus.call_internal("storage", "echo", text="still served") == "still served"
        finally:
            await bus.close()


async def test_request_to_absent_process_fails_fast(bus_home):
    bus = await connect(bus_home)
    try:
        with pytest.raises(UnavailableError):
            await bus.call_internal("messaging", "ping", timeout=5)
    finally:
        await bus.close()


async def test_oversize_request_and_reply_fail_fast_with_413(bus_home):
    async with running_service(bus_home, "storage", Echo):
        bus = await connect(bus_home)
        try:
            assert bus.nc.max_payload == MAX_BUS_PAYLOAD
            began = time.monotonic()
            with pytest.raises(NodeError) as request:
                await bus.call_internal("storage", "echo", timeout=30, text="x" * (MAX_BUS_PAYLOAD + 1))
            with pytest.raises(NodeError) as reply:
                await bus.call_internal("storage", "echo", timeout=30, text="x" * 1024,
                                        times=MAX_BUS_PAYLOAD // 1024 + 1)
            assert (request.value.status, request.value.reason) == (413, "payload_too_large")
            assert (reply.value.status, reply.value.reason) == (413, "payload_too_large")
            assert time.monotonic() - began < 10  # neither waited for its 30 s timeout
        finally:
            await bus.close()
