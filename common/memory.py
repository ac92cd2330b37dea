"""Give back to the system the memory a burst of work freed.

glibc keeps what a process frees. It raises its mmap threshold to the largest block freed, so
later blocks of that size come from the heap instead of fresh pages, and it returns the top of the
heap only past a trim threshold raised the same way. After storing a 5 MiB file, the customer's
transport kept 5 MB more than before for as long as it ran (`bench/api_latency.py --network 3`).

`Trimmer` looks every `INTERVAL` seconds at how much glibc holds free (`mallinfo2`) and, past
`THRESHOLD`, returns it (`malloc_trim(0)`): at most one heap's worth of pages refaulted per interval
during a long burst. `malloc_trim` returns free chunks of every arena but the top of the main one
only; what worker threads free at the top of their own arena (the customer's storage process: 15
MB) stays. With `MALLOC_ARENA_MAX=1` it would go too, but one arena for the loop and the worker
threads cost the storage process 0.5–1.3 CPU ms more per MiB downloaded (docs/decisions.md).
Without glibc 2.33 or later (no `mallinfo2`) the trimmer does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import Any

from common.background import Background

log = logging.getLogger(__name__)

INTERVAL = 10.0
THRESHOLD = 4 * 1024 * 1024
"""Free bytes glibc may keep before they are returned."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
        mallinfo2, malloc_trim = libc.mallinfo2, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []
    malloc_trim.restype = ctypes.c_int
    malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


class Trimmer:
    """Returns glibc's free memory to the system when it holds more than `threshold` bytes."""

    def __init__(self, threshold: int = THRESHOLD, interval: float = INTERVAL):
        self.threshold = threshold
        self.interval = interval
        self.trims = 0
        self._libc = _libc()
        self._task = Background(self._run)

    @property
    def available(self) -> bool:
        return self._libc is not None

    def free_bytes(self) -> int:
        """What glibc holds free in its heaps (0 without glibc)."""
        return int(self._libc.mallinfo2().fordblks) if self._libc is not None else 0

    def trim_if_worth(self) -> bool:
        """Return the free memory if there is more than `threshold` of it; True if it did."""
        if self.free_bytes() <= self.threshold:
            return False
        self._libc.malloc_trim(0)
        self.trims += 1
        return True

    def start(self) -> None:
        if self.available:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.trim_if_worth()
            except Exception:  # noqa: BLE001 - memory housekeeping must never stop the process
                log.exception("returning free memory failed")
