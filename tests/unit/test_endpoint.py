"""`never_suspends`: which endpoints the bus adapter may answer with no task of their own."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from common.endpoint import never_suspends


class Handlers:
    async def plain(self) -> list[int]:
        return [n * 2 for n in range(3)]

    async def awaits(self) -> None:
        await asyncio.sleep(0)

    async def async_with(self, lock: asyncio.Lock) -> None:
        async with lock:
            pass

    async def async_for(self, items: Any) -> None:
        async for _ in items:
            pass

    async def async_comprehension(self, items: Any) -> list[Any]:
        return [item async for item in items]

    def synchronous(self) -> int:
        return 1


def wrapped(func: Any) -> Any:
    @functools.wraps(func)
    async def wrapper(*args: Any) -> Any:
        return func(*args)

    return wrapper


def test_only_a_coroutine_with_no_suspension_point_runs_inline():
    handlers = Handlers()
    assert never_suspends(handlers.plain)
    assert never_suspends(Handlers.plain)
    for suspends in (handlers.awaits, handlers.async_with, handlers.async_for, handlers.async_comprehension):
        assert not never_suspends(suspends), suspends.__name__
    assert not never_suspends(handlers.synchronous)  # not a coroutine: the adapter awaits what it returns
    assert not never_suspends(wrapped(Handlers.plain))  # a wrapper may hide an await


def test_an_inline_coroutine_finishes_at_its_first_step():
    coro = Handlers().plain()
    try:
        coro.send(None)
    except StopIteration as done:
        assert done.value == [0, 2, 4]
    else:
        raise AssertionError("suspended")
