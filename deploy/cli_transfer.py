"""`bitdust files put` / `files get`: start a transfer on the node and follow its progress events.

The node reports progress itself (`upload-progress` / `download-progress` after every block, then
`…-finished` or `…-failed`, pushed on the WebSocket); the command connects before starting the
transfer, so it misses none. On a terminal it draws a bar; on a pipe or with `--json` it prints
JSON lines as `restic --json` does: `status` lines, then one `summary`. Ctrl-C leaves the transfer
running on the node (and says so) unless `--cancel-on-interrupt` was given.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from common import codec
from deploy.cli_client import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, NodeClient

READABLE = ("ready", "degraded")
"""Job states that end a transfer well: `degraded` is stored and readable, its missing fragments
are repaired by the node in the background."""
IDLE_CHECK = 10.0
"""Seconds without an event after which the command asks the node how the transfer stands."""


@dataclass
class Tally:
    """What the events told of one transfer (one or more files), summed over its jobs."""

    kind: str
    started: float = field(default_factory=time.monotonic)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Latest job info by job key (version), as the node sent it."""
    expected: int = 0
    """How many jobs the node said it started."""
    total_hint: int = 0

    def update(self, info: dict[str, Any]) -> None:
        self.jobs[_job_key(info)] = info

    @property
    def bytes_done(self) -> int:
        return sum(int(j.get("bytes_processed") or 0) for j in self.jobs.values())

    @property
    def total_bytes(self) -> int:
        return max(self.total_hint, sum(int(j.get("total_size") or 0) for j in self.jobs.values()))

    @property
    def blocks(self) -> tuple[int, int]:
        return (sum(int(j.get("block_number") or 0) for j in self.jobs.values()),
                sum(_blocks_total(j) for j in self.jobs.values()))

    @property
    def finished(self) -> bool:
        return len(self.jobs) >= max(1, self.expected) and all(j.get("done") for j in self.jobs.values())

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs.values() if j.get("done") and j.get("state") not in READABLE]

    @property
    def degraded(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs.values() if j.get("done") and j.get("state") == "degraded"]

    def status_line(self) -> dict[str, Any]:
        """The `restic --json` style status message."""
        elapsed = time.monotonic() - self.started
        done, total = self.bytes_done, self.total_bytes
        rate = done / elapsed if elapsed > 0 else 0.0
        blocks_done, blocks_total = self.blocks
        return {"message_type": "status", "action": self.kind,
                "percent_done": round(done / total, 4) if total else (1.0 if self.finished else 0.0),
                "bytes_done": done, "total_bytes": total, "blocks_done": blocks_done,
                "blocks_total": blocks_total, "files_done": sum(1 for j in self.jobs.values() if j.get("done")),
                "seconds_elapsed": round(elapsed, 3),
                "seconds_remaining": round((total - done) / rate, 1) if rate > 0 and total >= done else None}

    def summary(self, **extra: Any) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        failed = self.failed
        state = "failed" if failed else "degraded" if self.degraded else "ready"
        return {"message_type": "summary", "action": self.kind, "state": state,
                "bytes": self.bytes_done, "total_bytes": self.total_bytes, "files": len(self.jobs),
                "seconds": round(elapsed, 3), "bytes_per_second": int(self.bytes_done / elapsed) if elapsed else 0,
                "errors": [f"{j.get('remote_path')}: {j.get('error')}" for j in failed + self.degraded], **extra}


def _blocks_total(info: dict[str, Any]) -> int:
    """The job's block count: the node knows it for sure only at the end, so until then from the size."""
    known = int(info.get("blocks_total") or 0)
    block, size = int(info.get("block_size") or 0), int(info.get("total_size") or 0)
    if known or not block:
        return known
    return max(1, -(-size // block))


def _job_key(info: dict[str, Any]) -> str:
    return str(info.get("version") or info.get("remote_path") or "")


class JsonLines:
    """Progress as JSON lines on `out` (a pipe, or `--json`)."""

    def __init__(self, out: TextIO):
        self.out = out
        self._last: tuple[int, ...] = ()

    def __enter__(self) -> "JsonLines":
        return self

    def __exit__(self, *_: Any) -> None:
        pass

    def show(self, tally: Tally) -> None:
        line = tally.status_line()
        seen = (line["bytes_done"], line["total_bytes"], line["blocks_done"], line["files_done"])
        if seen != self._last:
            self._last = seen
            self.emit(line)

    def emit(self, doc: dict[str, Any]) -> None:
        self.out.write(codec.dumps(doc).decode() + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        sys.stderr.write(text + "\n")


class Bar:
    """Progress as a live bar: bytes, percent, rate, ETA and blocks done."""

    def __init__(self, label: str, console: Any = None):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeRemainingColumn)

        self.console = console or Console(stderr=False)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                                 DownloadColumn(binary_units=True), TextColumn("{task.fields[rate]}"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[blocks]}"), console=self.console,
                                 transient=False)
        self.task = self.progress.add_task(label, total=None, blocks="", rate="")

    def __enter__(self) -> "Bar":
        self.progress.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.progress.stop()

    def show(self, tally: Tally) -> None:
        done, total = tally.blocks
        elapsed = time.monotonic() - tally.started
        rate = f"{tally.bytes_done / elapsed / 1048576:.1f} MiB/s" if elapsed > 0 and tally.bytes_done else ""
        self.progress.update(self.task, completed=tally.bytes_done, total=tally.total_bytes or None, rate=rate,
                             blocks=f"blocks {done}/{total}" if total else f"blocks {done}")

    def emit(self, doc: dict[str, Any]) -> None:
        if doc.get("message_type") == "summary":
            mib = doc["bytes"] / 1048576
            rate = doc["bytes_per_second"] / 1048576
            ends = (doc.get("local_path"), doc.get("remote_path"))
            source, target = ends if doc["action"] == "upload" else ends[::-1]
            line = (f"{doc['action']} {doc['state']}: {source} -> {target}: {mib:.1f} MiB in {doc['seconds']:.1f}s "
                    f"({rate:.1f} MiB/s)")
            self.console.print(line, highlight=False)
            for error in doc.get("errors") or []:
                self.console.print(f"[red]{error}")

    def note(self, text: str) -> None:
        self.console.print(text)


async def follow(client: NodeClient, kind: str, start: Callable[[], Any], matches: Callable[[dict[str, Any]], bool],
                 view: Any, cancel: Callable[[], Any], cancel_on_interrupt: bool, total_hint: int = 0,
                 expected: Callable[[Any], int] = lambda _: 1, extra: dict[str, Any] | None = None) -> int:
    """Start a transfer with `start()` and follow its events until it ends or Ctrl-C; the exit code."""
    tally = Tally(kind, total_hint=total_hint)
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        async with client.events() as events:
            started = await asyncio.to_thread(start)
            tally.expected = expected(started)
            with view:
                view.show(tally)
                while not tally.finished and not interrupted.is_set():
                    waiting = asyncio.ensure_future(events.next(IDLE_CHECK))
                    stop = asyncio.ensure_future(interrupted.wait())
                    await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    if not waiting.done():
                        waiting.cancel()
                        break
                    event = waiting.result()
                    if event is None:
                        await _check(client, kind, tally, matches)
                    elif str(event.get("event_id", "")).startswith(f"{kind}-") and isinstance(event.get("data"), dict) \
                            and matches(event["data"]):
                        tally.update(event["data"])
                    else:
                        continue
                    view.show(tally)
            if interrupted.is_set():
                if cancel_on_interrupt:
                    await asyncio.to_thread(cancel)
                    view.note(f"interrupted: the {kind} was stopped on the node")
                else:
                    view.note(f"interrupted: the {kind} goes on on the node (`bitdust transfers` shows it; "
                              f"--cancel-on-interrupt stops it instead)")
                return EXIT_INTERRUPTED
            view.emit(tally.summary(**(extra or {})))
            return EXIT_FAILED if tally.failed else EXIT_OK
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _check(client: NodeClient, kind: str, tally: Tally, matches: Callable[[dict[str, Any]], bool]) -> None:
    """No event for a while: ask the node (events are best effort; a reconnect may have lost one)."""
    if kind == "upload":
        found = await client.acall("files_uploads")
        jobs = list(found.get("running") or []) + list(found.get("finished") or [])
    else:
        jobs = list(await client.acall("files_downloads") or [])
    for info in jobs:
        if matches(info):
            tally.update(info)


def pick_view(json_lines: bool, label: str, out: TextIO | None = None) -> Any:
    stream = out or sys.stdout
    if json_lines or not stream.isatty():
        return JsonLines(stream)
    return Bar(label)
