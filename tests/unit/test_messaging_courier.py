"""Store and forward: pending while the recipient is away, delivered in order when it returns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from common.errors import UnavailableError
from services.messaging import courier as courier_module
from services.messaging.courier import Courier, backoff
from services.messaging.store import DELIVERED, EXPIRED, PENDING, MessageStore, StoredMessage
from tests.helpers import await_for

ME = "http://127.0.0.1:8084/alice.xml"
BOB = "http://127.0.0.1:8084/bob.xml"


class Wire:
    """A recipient that is offline, refuses, or acknowledges."""

    def __init__(self) -> None:
        self.mode = "offline"
        self.sent: list[str] = []

    async def deliver(self, recipient: str, payload: dict[str, Any], ping_timeout: float,
                      ack_timeout: float) -> dict[str, Any]:
        if self.mode == "offline":
            raise UnavailableError("bob is not reachable", reason="peer_offline")
        if self.mode == "no_handler":
            return {"command": "Fail", "payload": "no handler"}
        self.sent.append(payload["message_id"])
        return {"command": "Ack", "payload": {"consumed": True}}


def _message(n: int, now: float) -> StoredMessage:
    return StoredMessage(ME, f"private_{n}", "out", BOB, "private_message", now + n / 1000, {"n": n}, PENDING,
                         next_attempt=now, expires=now + 3600)


async def _seal(message: StoredMessage) -> dict[str, Any]:
    return {"message_id": message.message_id}


def test_backoff_grows_and_is_capped():
    assert backoff(0) == courier_module.BACKOFF_BASE
    assert backoff(1) == 2 * courier_module.BACKOFF_BASE
    assert backoff(50) == courier_module.BACKOFF_MAX


async def test_pending_then_delivered_in_order_when_back(tmp_path: Path):
    store = MessageStore(tmp_path / "m.sqlite")
    wire = Wire()
    changes: list[tuple[str, str]] = []

    async def changed(message: StoredMessage) -> None:
        changes.append((message.message_id, message.state))

    courier = Courier(store, wire, _seal, changed)
    now = asyncio.get_running_loop().time()
    messages = [_message(n, time.time()) for n in range(3)]
    for message in messages:
        store.add(message)
    first = await courier.attempt(messages[0])
    assert first.state == PENDING and first.attempts == 1 and first.last_error == "peer_offline"
    runner = asyncio.ensure_future(courier.run())
    try:
        wire.mode = "no_handler"  # the node is up, its messaging process is not
        courier.wake(BOB)
        await await_for(lambda: _async(store.outgoing("private_0").attempts >= 2), what="a retry")
        assert store.outgoing("private_0").last_error == "no handler"
        wire.mode = "ack"
        courier.wake(BOB)  # what presence CONNECTED does
        await await_for(lambda: _async(not store.pending()), timeout=10, what="outbox delivered")
    finally:
        runner.cancel()
    assert wire.sent == ["private_0", "private_1", "private_2"]
    assert all(store.outgoing(m.message_id).state == DELIVERED for m in messages)
    assert store.outgoing("private_2").consumed
    assert ("private_2", DELIVERED) in changes
    assert asyncio.get_running_loop().time() - now < 10


async def test_expired_when_never_back(tmp_path: Path):
    store = MessageStore(tmp_path / "m.sqlite")
    clock = [1000.0]
    courier = Courier(store, Wire(), _seal, _nothing, clock=lambda: clock[0])
    store.add(_message(1, 1000.0))
    clock[0] = 1000.0 + 3601
    await courier._round()
    assert store.outgoing("private_1").state == EXPIRED


async def test_paused_while_switched_off(tmp_path: Path):
    store = MessageStore(tmp_path / "m.sqlite")
    wire = Wire()
    wire.mode = "ack"
    courier = Courier(store, wire, _seal, _nothing, enabled=lambda: False)
    store.add(_message(1, time.time()))
    await courier._round()
    await asyncio.sleep(0)
    assert wire.sent == [] and store.pending()


async def _nothing(_message: StoredMessage) -> None:
    return None


async def _async(value: Any) -> Any:
    return value
