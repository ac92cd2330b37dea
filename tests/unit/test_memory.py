"""`common.memory.Trimmer`: memory a burst of work freed goes back to the system (glibc), checked in a
fresh interpreter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.memory import Trimmer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not Trimmer().available, reason="needs glibc 2.33+ (mallinfo2, malloc_trim)")


def test_freed_blocks_are_returned_past_the_threshold_and_not_before():
    code = textwrap.dedent("""
        from common.memory import Trimmer

        def rss_mib():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) // 1024

        trimmer = Trimmer(threshold=8 * 1024 * 1024)
        print(trimmer.trim_if_worth())  # nothing much free yet
        big = bytearray(16 * 1024 * 1024)  # mapped, then freed: glibc raises its mmap threshold to
        del big                             # 16 MiB and its trim threshold to 32 MiB
        blocks = [bytearray(b"x" * (4 * 1024 * 1024)) for _ in range(6)]  # now from the heap
        held = rss_mib()
        del blocks
        kept = rss_mib()
        print(trimmer.free_bytes() > 20 * 1024 * 1024, held - kept < 4)  # freed, yet still held
        print(trimmer.trim_if_worth(), kept - rss_mib() > 20, trimmer.trims)
        print(trimmer.trim_if_worth())
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["False", "True True", "True True 1", "False"]


async def test_the_trimmer_runs_in_the_background_until_stopped():
    trimmer = Trimmer(threshold=-1, interval=0.01)  # every look trims
    trimmer.start()
    deadline = asyncio.get_running_loop().time() + 5
    while trimmer.trims < 2:
        assert asyncio.get_running_loop().time() < deadline, "the trimmer never ran"
        await asyncio.sleep(0.01)
    await trimmer.stop()
    trims = trimmer.trims
    await asyncio.sleep(0.05)
    assert trimmer.trims == trims


def test_what_worker_threads_freed_at_the_top_of_their_arena_is_returned_when_idle():
    code = textwrap.dedent("""
        import asyncio
        from common.memory import Trimmer

        def rss_mib():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) // 1024

        def work():
            big = bytearray(16 * 1024 * 1024)  # mapped, then freed: later blocks come from this thread's heap
            del big
            blocks = [bytearray(b"x" * (4 * 1024 * 1024)) for _ in range(4)]
            return sum(len(block) for block in blocks)

        async def main():
            trimmer = Trimmer(threshold=8 * 1024 * 1024, idle=lambda: True)
            await asyncio.gather(*(asyncio.to_thread(work) for _ in range(2)))
            trimmer.trim_if_worth()
            kept = rss_mib()
            print(trimmer.free_bytes() > 12 * 1024 * 1024)  # malloc_trim left the workers' heap tops
            await trimmer.trim_worker_arenas()
            print(kept - rss_mib() > 12, trimmer.free_bytes() < 8 * 1024 * 1024, trimmer.worker_trims)
            # The next burst is served as before, and the heap is given back again when it is done.
            await asyncio.gather(*(asyncio.to_thread(work) for _ in range(2)))
            trimmer.trim_if_worth()
            await trimmer.trim_worker_arenas()
            print(rss_mib() - kept < -12)

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["True", "True True 1", "True"]
