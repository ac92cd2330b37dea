"""Give back to the system the memory a burst of work freed.

glibc keeps what a process frees. It raises its mmap threshold to the largest block freed, so
later blocks of that size come from the heap instead of fresh pages, and it returns the top of the
heap only past a trim threshold raised the same way. After storing a 5 MiB file, the customer's
transport kept 5 MB more than before for as long as it ran (`bench/api_latency.py --network 3`).

`Trimmer` looks every `INTERVAL` seconds at how much glibc holds free (`mallinfo2`) and, past
`THRESHOLD`, returns it (`malloc_trim(0)`): at most one heap's worth of pages refaulted per interval
during a long burst. `malloc_trim` returns free chunks of every arena but the top of the main one
only. What worker threads free at the top of their own arena (the customer's storage process: 15
MB after the storage demo) takes one more step, `trim_worker_arenas`, run only while the process
says it is idle (`idle`): glibc shrinks a thread's heap when a chunk of 64 KiB or more is freed
next to its top and the top is over the trim threshold, so for a moment the threshold is lowered
and every worker thread frees such a chunk. Setting a threshold ends glibc's dynamic rule, so both
are then fixed where that rule leaves them after 16 MiB blocks (blocks up to 32 MiB from the heap,
32 MiB kept at a heap's top): transfers stay as fast, and idle time gives the memory back. One
arena for all threads (`MALLOC_ARENA_MAX=1`) would also do it, but cost the storage process 0.5–1.3
CPU ms more per MiB downloaded (docs/decisions.md).
Without glibc 2.33 or later (no `mallinfo2`) the trimmer does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from typing import Any, Callable

from common.background import Background

log = logging.getLogger(__name__)

INTERVAL = 10.0
THRESHOLD = 4 * 1024 * 1024
"""Free bytes glibc may keep before they are returned."""
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
HEAP_MMAP_THRESHOLD = 32 * 1024 * 1024
"""glibc's ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)."""
HEAP_TRIM_THRESHOLD = 32 * 1024 * 1024
"""What glibc's dynamic rule makes the trim threshold once 16 MiB blocks (the default) were freed."""
NUDGE_SIZE = 96 * 1024
"""A chunk whose free makes glibc look at its heap's top (FASTBIN_CONSOLIDATION_THRESHOLD is 64 KiB)."""
NUDGE_TIMEOUT = 1.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
        mallinfo2, malloc_trim, mallopt = libc.mallinfo2, libc.malloc_trim, libc.mallopt
        malloc, free = libc.malloc, libc.free
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []
    malloc_trim.restype = ctypes.c_int
    malloc_trim.argtypes = [ctypes.c_size_t]
    mallopt.restype = ctypes.c_int
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    free.restype = None
    free.argtypes = [ctypes.c_void_p]
    return libc


class Trimmer:
    """Returns glibc's free memory to the system when it holds more than `threshold` bytes."""

    def __init__(self, threshold: int = THRESHOLD, interval: float = INTERVAL,
                 idle: Callable[[], bool] | None = None):
        """`idle`, when given: True while no worker thread is busy, and then their arenas are trimmed too."""
        self.threshold = threshold
        self.interval = interval
        self.idle = idle
        self.trims = 0
        self.worker_trims = 0
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

    async def trim_worker_arenas(self) -> None:
        """Return the free top of each worker thread's arena (see the module's docstring).

        Every thread but the caller's frees a `NUDGE_SIZE` chunk while the trim threshold is low; a
        barrier makes the jobs meet, so each runs in a thread of its own. Call it only when the
        workers are idle: a busy one would make the executor start another thread for its job.
        """
        workers = threading.active_count() - 1
        if self._libc is None or workers < 1:
            return
        libc = self._libc
        barrier = threading.Barrier(workers, timeout=NUDGE_TIMEOUT)

        def nudge() -> None:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass  # a thread was busy after all: the others still give back what they can
            libc.free(libc.malloc(NUDGE_SIZE))

        loop = asyncio.get_running_loop()
        libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)  # before the first mallopt ends the dynamic rule
        libc.mallopt(M_TRIM_THRESHOLD, NUDGE_SIZE)
        try:
            await asyncio.gather(*(loop.run_in_executor(None, nudge) for _ in range(workers)))
        finally:
            libc.mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)
        self.worker_trims += 1

    def start(self) -> None:
        if self.available:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.trim_if_worth() and self.idle is not None and self.idle() \
                        and self.free_bytes() > self.threshold:
                    await self.trim_worker_arenas()
            except Exception:  # noqa: BLE001 - memory housekeeping must never stop the process
                log.exception("returning free memory failed")
