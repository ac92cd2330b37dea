"""The event-loop lag monitor sees a loop that is kept busy."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from common.loop_lag import LagMonitor


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


async def test_a_blocked_loop_shows_as_lag() -> None:
    monitor = LagMonitor(interval=0.01)
    monitor.start()
    try:
        await asyncio.wait_for(_until(lambda: monitor.snapshot()["samples"] >= 3), 5)
        time.sleep(0.05)  # the loop is blocked on purpose: this is what the monitor must see
        await asyncio.wait_for(_until(lambda: monitor.snapshot()["max_ms"] >= 40), 5)
        assert monitor.snapshot()["worst_ms"] >= 40
        monitor.reset()
        assert monitor.snapshot()["samples"] == 0
    finally:
        monitor.stop()
