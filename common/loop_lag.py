"""How late the event loop runs what is due: the lag a busy process imposes on every request.

A task sleeps `interval` seconds again and again and records how much later than asked it woke;
`snapshot` gives percentiles of the last minute or so.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

INTERVAL = 0.1
SAMPLES = 600


class LagMonitor:
    """Measures event-loop lag while started."""

    def __init__(self, interval: float = INTERVAL, samples: int = SAMPLES):
        self.interval = interval
        self._lags: deque[float] = deque(maxlen=samples)
        self._task: asyncio.Task[None] | None = None
        self.worst = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.perf_counter() - began - self.interval)
            self._lags.append(lag)
            self.worst = max(self.worst, lag)

    def reset(self) -> None:
        self._lags.clear()
        self.worst = 0.0

    def snapshot(self) -> dict[str, Any]:
        """p50 / p99 / max of the recent samples, and the worst since start or reset, in ms."""
        ordered = sorted(self._lags)
        if not ordered:
            return {"samples": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "worst_ms": round(self.worst * 1000, 2)}

        def pct(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

        return {"samples": len(ordered), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                "max_ms": round(ordered[-1] * 1000, 2), "worst_ms": round(self.worst * 1000, 2)}
