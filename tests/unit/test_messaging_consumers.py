"""message_receive consumers: pending at once, long poll, filters, dropped after 100 uncollected."""

from __future__ import annotations

import asyncio

from services.messaging.consumers import ConsumerBook

PRIVATE = frozenset({"private_message"})


def _item(n: int, direction: str = "incoming", msg_type: str = "private_message") -> dict:
    return {"message_id": f"m{n}", "dir": direction, "msg_type": msg_type}


async def test_pending_at_once_then_long_poll():
    book = ConsumerBook()
    assert await book.poll("c", "incoming", PRIVATE, 0) == []
    assert not book.push(_item(1))  # registered but not polling: kept, not taken
    assert [i["message_id"] for i in await book.poll("c", "incoming", PRIVATE, 5)] == ["m1"]
    waiting = asyncio.ensure_future(book.poll("c", "incoming", PRIVATE, 5))
    await asyncio.sleep(0)
    assert book.push(_item(2))
    assert [i["message_id"] for i in await waiting] == ["m2"]
    started = asyncio.get_running_loop().time()
    assert await book.poll("c", "incoming", PRIVATE, 0.05) == []
    assert asyncio.get_running_loop().time() - started >= 0.04


async def test_filters():
    book = ConsumerBook()
    await book.poll("out", "outgoing", frozenset(), 0)
    await book.poll("groups", "incoming", frozenset({"group_message"}), 0)
    await book.poll("all", "all", frozenset(), 0)
    book.push(_item(1))
    book.push(_item(2, direction="outgoing"))
    book.push(_item(3, msg_type="group_message"))
    assert [i["message_id"] for i in await book.poll("out", "outgoing", frozenset(), 0)] == ["m2"]
    assert [i["message_id"] for i in await book.poll("groups", "incoming", frozenset({"group_message"}), 0)] == ["m3"]
    assert len(await book.poll("all", "all", frozenset(), 0)) == 3


async def test_consumer_dropped_after_100_uncollected():
    book = ConsumerBook()
    await book.poll("lazy", "incoming", PRIVATE, 0)
    await book.poll("busy", "incoming", PRIVATE, 0)
    for n in range(99):
        book.push(_item(n))
    assert len(await book.poll("busy", "incoming", PRIVATE, 0)) == 99
    book.push(_item(99))
    assert len(book) == 1 and book.dropped == 1
    # Polling again registers it afresh, with nothing from before.
    assert await book.poll("lazy", "incoming", PRIVATE, 0) == []


async def test_too_many_consumers():
    book = ConsumerBook(max_consumers=2)
    await book.poll("a", "incoming", PRIVATE, 0)
    await book.poll("b", "incoming", PRIVATE, 0)
    try:
        await book.poll("c", "incoming", PRIVATE, 0)
    except OverflowError:
        pass
    else:
        raise AssertionError("a third consumer was accepted")
