"""One long-running task owned by an object: started once, cancelled and awaited on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Background:
    """Runs `run()` as a task between `start()` and `stop()` (each idempotent)."""

    def __init__(self, run: Callable[[], Awaitable[None]]):
        self._run = run
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
