"""Uploads, downloads and rebuilds: the long-running jobs of the customer role.

An upload streams a file block by block (read → seal → one fragment per supplier), keeping at
most `window` blocks in memory. Each block's row records which positions acknowledged their
fragment (after the supplier's fsync); a block fewer than k positions hold fails the upload. At
the end the version is `ready` when every position holds every block, else `degraded` (readable,
the missing positions listed, repaired in the background by `repair_version`). A download
fetches any k verified fragments per block, decrypts, writes the blocks in order to a temporary
file beside the destination and renames it into place at the end, so a reader never sees half a
file. A rebuild sends a new supplier the fragments of its position,
recomputed from the others. Memory stays bounded by the window, whatever the file size.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from common import spool
from common.errors import NodeError
from common.fsutil import fsync_dir
from services.storage import blocks
from services.storage.catalog import DEGRADED, FAILED, READABLE, READY, Block, Catalog, Item, Version, stored_mask
from services.storage.fragments import Mover, fragment_name, write_slots

log = logging.getLogger(__name__)

Progress = Callable[[str, dict[str, Any]], Awaitable[None]]

DOWNLOAD_BUFFER = 32 * 1024 * 1024
"""Plaintext bytes a download keeps in memory at most (whole blocks, at least one): an upload's
blocks in flight wait in spool files, a download's in memory, so its window is capped by size."""


@dataclass
class Job:
    """What `files_uploads`, `files_downloads` and `transfers_list` show of a running job."""

    kind: str
    remote_path: str
    key_id: str
    uid: str
    total_size: int
    path: str
    block_size: int = 0
    suppliers: int = 0
    bytes_done: int = 0
    blocks_done: int = 0
    blocks_total: int = 0
    state: str = "running"
    error: str = ""
    missing_positions: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def progress(self) -> str:
        if self.total_size <= 0:
            return "100%" if self.state in READABLE else "0%"
        return f"{min(100, int(self.bytes_done * 100 / self.total_size))}%"

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "remote_path": self.remote_path, "key_id": self.key_id,
                "version": f"{self.remote_path}/{self.uid}" if self.uid else "", "backup_id": self.uid,
                "source_path" if self.kind == "upload" else "local_path": self.path,
                "total_size": self.total_size, "bytes_processed": self.bytes_done, "progress": self.progress,
                "block_number": self.blocks_done, "blocks_total": self.blocks_total, "block_size": self.block_size,
                "eccmap": blocks.ecc_map_name(self.suppliers) if self.suppliers else None,
                "state": self.state, "error": self.error, "missing_positions": self.missing_positions,
                "started": self.started,
                "aborting": self.state == "stopping", "done": self.done.is_set()}


class TransferError(NodeError):
    def __init__(self, message: str, reason: str, status: int = 503):
        super().__init__(message, reason=reason, status=status)


@dataclass(frozen=True)
class _Staged:
    """A block sealed and spooled: what its sends and its catalog row need."""

    plain_size: int
    cipher_size: int
    hashes: list[str]


class _BlockStager:
    """Reads, seals and spools the blocks of one upload, one at a time, into buffers it reuses."""

    def __init__(self, block_size: int, suppliers: int, session_key: bytes, uid: str):
        self.suppliers = suppliers
        self.session_key = session_key
        self.uid = uid
        self.plain = bytearray(block_size)
        self.sealed = bytearray(blocks.sealed_size(block_size, suppliers))

    def stage(self, handle: Any, block_no: int, paths: list[Path]) -> _Staged:
        """Block `block_no` read from `handle` (a short one at the end), its fragments written to `paths`."""
        view = memoryview(self.plain)
        got = 0
        while got < len(view):
            count = handle.readinto(view[got:])
            if not count:
                break
            got += count
        sealed = blocks.seal(self.session_key, self.uid, block_no, view[:got], self.suppliers, self.sealed)
        write_slots(paths, sealed.fragments)
        return _Staged(got, sealed.cipher_size, sealed.hashes)


def _finish_file(fd: int, size: int, tmp: Path, final: Path) -> None:
    """Cut the file to `size` (direct writes may have padded the last block), make it durable and
    move it into place; closes `fd`."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(final.parent)


class Transfers:
    """Runs the jobs; the service passes in the catalog, the mover and how to reach suppliers."""

    def __init__(self, catalog: Catalog, mover: Mover, progress: Progress,
                 note: Callable[[str, bool, str], None], current: Callable[[], list[str]] | None = None):
        self.catalog = catalog
        self.mover = mover
        self.progress = progress
        self.note = note
        self.current = current
        """The suppliers now at each position: an acknowledgement counts only from the one still there."""
        self.uploads: dict[str, Job] = {}
        self.downloads: dict[str, Job] = {}
        self.rebuilds: dict[str, Job] = {}
        self.repairs_done = 0
        self.staging = spool.StagingBuffers()

    def idle(self) -> bool:
        """True when no upload, download or rebuild is running (their worker threads are free)."""
        return all(job.done.is_set() for jobs in (self.uploads, self.downloads, self.rebuilds)
                   for job in jobs.values())

    # ---- upload ---------------------------------------------------------------------------------

    async def upload(self, job: Job, item: Item, source: Path, session_key: bytes, suppliers: list[str],
                     window: int, on_ready: Callable[[Item, Version], Awaitable[None]]) -> None:
        """Store `source` as a new version of `item`; sets the version's final state.

        One worker thread reads, seals and spools a block at a time into buffers reused for every
        block; the fragments wait in reused spool files (`SpoolSlots`), not in memory, while up to
        `window` blocks are being sent.
        """
        version = self.catalog.version(job.uid)
        assert version is not None
        n, k = len(suppliers), blocks.data_shares(len(suppliers))
        gate = asyncio.Semaphore(window)
        running: set[asyncio.Task[None]] = set()
        failures: list[str] = []
        block_no = 0
        slots = self.mover.slots(window, n)
        stager = _BlockStager(job.block_size, n, session_key, job.uid)

        async def one_block(number: int, staged: _Staged, paths: list[Path]) -> None:
            try:
                results = await self.mover.send_block(job.key_id, job.uid, number, staged.hashes, paths, suppliers)
                for idurl, ok, reason in results:
                    if idurl and reason != "vacant":
                        self.note(idurl, ok, reason)
                now = self.current() if self.current is not None else suppliers
                held = [p for p, (idurl, ok, _) in enumerate(results) if ok and p < len(now) and now[p] == idurl]
                if len(held) < k:
                    reasons = sorted({r for _, ok, r in results if not ok} or {"supplier replaced"})
                    failures.append(f"block {number}: {len(held)} of {k} suppliers acknowledged "
                                    f"({', '.join(reasons)})")
                    return
                self.catalog.put_block(Block(job.uid, number, staged.plain_size, staged.cipher_size, staged.hashes,
                                             stored_mask(held, n)))
                job.bytes_done += staged.plain_size
                job.blocks_done += 1
                await self.progress("upload-progress", job.info())
            finally:
                slots.give(paths)
                gate.release()

        try:
            handle = await asyncio.to_thread(open, source, "rb", buffering=0)
            try:
                while not failures and job.state == "running":
                    await gate.acquire()
                    paths = slots.take()
                    try:
                        staged = await asyncio.to_thread(stager.stage, handle, block_no, paths)
                    except BaseException:
                        slots.give(paths)
                        gate.release()
                        raise
                    if staged.plain_size == 0 and block_no > 0:
                        slots.give(paths)
                        gate.release()
                        break
                    task = asyncio.ensure_future(one_block(block_no, staged, paths))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    block_no += 1
                    if staged.plain_size < job.block_size:
                        break
                if running:
                    await asyncio.gather(*list(running))
            finally:
                await asyncio.to_thread(handle.close)
        except asyncio.CancelledError:
            job.state = "stopping"
            for task in list(running):
                task.cancel()
            failures.append("stopped")
        except OSError as err:
            failures.append(f"cannot read {source}: {err.strerror}")
        finally:
            await asyncio.to_thread(slots.remove)
        job.blocks_total = block_no
        if failures or job.state != "running":
            error = failures[0] if failures else "stopped"
            self.catalog.finish_version(job.uid, FAILED, job.bytes_done, block_no, error)
            job.state, job.error = FAILED, error
        else:
            self.catalog.finish_version(job.uid, READY, job.bytes_done, block_no)
            job.state = self.catalog.settle(job.uid)
            final = self.catalog.version(job.uid)
            assert final is not None
            if job.state == DEGRADED:
                job.missing_positions = self.catalog.health(final).missing_positions
                job.error = f"degraded: positions {job.missing_positions} do not hold every fragment yet"
            await on_ready(item, final)
        job.finished = time.time()
        job.done.set()
        await self.progress("upload-finished" if job.state in READABLE else "upload-failed", job.info())

    # ---- download -------------------------------------------------------------------------------

    async def download(self, job: Job, version: Version, session_key: bytes, suppliers: list[str],
                       customer_idurl: str | None, destination: Path, window: int,
                       offline: set[str]) -> None:
        """Rebuild `version` into `destination` (atomically); repairs fragments found bad."""
        window = max(1, min(window, DOWNLOAD_BUFFER // max(1, version.block_size)))
        block_list = self.catalog.blocks(version.uid)
        job.blocks_total = len(block_list)
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = destination.parent / f".{destination.name}.part-{secrets.token_hex(4)}"
        fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        pending: deque[asyncio.Task[bytes]] = deque()

        async def write_next() -> None:
            plain = await pending.popleft()
            # Past the page cache: a restored file is kept, and filling fresh cache pages costs
            # more than decrypting the bytes.
            await asyncio.to_thread(spool.write_at, fd, plain, job.bytes_done, self.staging)
            job.bytes_done += len(plain)
            job.blocks_done += 1
            await self.progress("download-progress", job.info())

        try:
            for block in block_list:
                pending.append(asyncio.ensure_future(
                    self._fetch_block(job, version, block, session_key, suppliers, customer_idurl, offline)))
                if len(pending) >= window:
                    await write_next()
            while pending:
                await write_next()
            if job.bytes_done != version.size:
                raise TransferError(f"rebuilt {job.bytes_done} bytes of {version.size}", reason="size_mismatch")
            finishing, fd = fd, -1
            await asyncio.to_thread(_finish_file, finishing, job.bytes_done, tmp, destination)
            job.state = READY
        except BaseException as err:
            for task in pending:
                task.cancel()
            if fd >= 0:
                await asyncio.to_thread(os.close, fd)
            tmp.unlink(missing_ok=True)
            job.state = FAILED
            job.error = getattr(err, "message", None) or str(err) or type(err).__name__
            raise
        finally:
            job.finished = time.time()
            job.done.set()
            await self.progress("download-finished" if job.state == READY else "download-failed", job.info())

    async def _fetch_block(self, job: Job, version: Version, block: Block, session_key: bytes,
                           suppliers: list[str], customer_idurl: str | None, offline: set[str]) -> bytes:
        shares, failed = await self.mover.fetch_shares(job.key_id, version, block, suppliers, customer_idurl,
                                                       offline=offline)
        k = blocks.data_shares(version.suppliers)
        if len(shares) < k:
            detail = ", ".join(f"{p}:{r}" for p, r in sorted(failed.items()))
            raise TransferError(f"block {block.block_no}: only {len(shares)} of {k} fragments available ({detail})",
                                reason="fragments_unavailable")
        cipher = await asyncio.to_thread(blocks.reassemble, shares, version.suppliers, block.cipher_size)
        plain = await asyncio.to_thread(blocks.open_block, session_key, version.uid, block.block_no, cipher)
        bad = [p for p, reason in failed.items() if reason in ("corrupt", "not_found")]
        if customer_idurl is None:
            found = [p for p in shares if p in block.missing()]
            if found:
                self._mark(version, block, found, suppliers)
        if bad and customer_idurl is None:
            self.catalog.mark_stored(version.uid, block.block_no, bad, stored=False)
            self.catalog.settle(version.uid)
            # Reported for repair: rebuilt from the good fragments and sent back in the background.
            log.warning("block %d of %s: fragments %s bad (%s); repairing", block.block_no, version.uid, bad,
                        [failed[p] for p in bad])
            task = asyncio.ensure_future(self._repair(job.key_id, version, block, shares, bad, suppliers))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return plain

    async def _repair(self, key_id: str, version: Version, block: Block, shares: dict[int, bytes],
                      positions: list[int], suppliers: list[str]) -> None:
        stored = await self.mover.repair(key_id, version, block, shares, positions, suppliers)
        self._mark(version, block, stored, suppliers)
        self.repairs_done += len(stored)
        if stored:
            await self.progress("fragment-repaired", {"backup_id": version.uid, "block": block.block_no,
                                                      "positions": positions, "stored": len(stored)})

    def _mark(self, version: Version, block: Block, positions: list[int], suppliers: list[str]) -> None:
        """Record repaired fragments, only where the supplier they went to is still at its position."""
        now = self.current() if self.current is not None else suppliers
        held = [p for p in positions if p < len(now) and now[p] == suppliers[p]]
        if held:
            self.catalog.mark_stored(version.uid, block.block_no, held)
            self.catalog.settle(version.uid)

    # ---- rebuild --------------------------------------------------------------------------------

    async def repair_version(self, key_id: str, version: Version, suppliers: list[str], usable: set[int],
                             job: Job | None = None) -> tuple[int, int]:
        """Send the fragments `version` lacks at the `usable` positions, each recomputed from k others.

        Returns (fragments stored, fragments still missing at usable positions); the version's state
        follows (`ready` once none is missing anywhere).
        """
        stored_count, left = 0, 0
        if version.suppliers != len(suppliers):
            return 0, 0
        away = {idurl for p, idurl in enumerate(suppliers) if idurl and p not in usable}
        for block in self.catalog.incomplete_blocks(version.uid):
            todo = [p for p in block.missing() if p in usable and suppliers[p]]
            if todo:
                stored, still = await self._repair_block(key_id, version, block, suppliers, todo, away)
                stored_count += stored
                left += still
                if still and job is not None:
                    job.error = f"block {block.block_no} of {version.uid} could not be rebuilt"
            if job is not None:
                job.blocks_done += 1
                job.bytes_done += block.plain_size
        self.catalog.settle(version.uid)
        return stored_count, left

    async def _repair_block(self, key_id: str, version: Version, block: Block, suppliers: list[str],
                            todo: list[int], away: set[str]) -> tuple[int, int]:
        """Send `block`'s fragments at `todo`, rebuilt from k read back; (stored, still missing)."""
        missing = block.missing()
        # Positions known to hold the block are read first. One read back with its sha256 holds it,
        # whatever the row said (a catalog from before the record, say): it needs no resend.
        last = away | {suppliers[p] for p in missing}
        shares, _ = await self.mover.fetch_shares(key_id, version, block, suppliers, None, offline=last)
        self._mark(version, block, [p for p in shares if p in missing], suppliers)
        todo = [p for p in todo if p not in shares]
        if not todo:
            return 0, 0
        if len(shares) < blocks.data_shares(version.suppliers):
            return 0, len(todo)
        stored = await self.mover.repair(key_id, version, block, shares, todo, suppliers)
        self._mark(version, block, stored, suppliers)
        if stored:
            await self.progress("fragment-repaired", {"backup_id": version.uid, "block": block.block_no,
                                                      "positions": stored, "stored": len(stored)})
        return len(stored), len(todo) - len(stored)

    async def rebuild_position(self, job: Job, position: int, suppliers: list[str],
                               versions: list[tuple[str, Version]]) -> int:
        """Send the supplier now at `position` its fragment of every block of `versions` it lacks."""
        job.blocks_total = sum(len(self.catalog.incomplete_blocks(v.uid)) for _, v in versions)
        sent = 0
        try:
            for key_id, version in versions:
                stored, _ = await self.repair_version(key_id, version, suppliers, {position}, job)
                sent += stored
        except BaseException as err:
            # Stopped or failed part way: the job says so rather than staying "running" for good.
            job.error = job.error or getattr(err, "message", None) or str(err) or type(err).__name__
            raise
        finally:
            job.state = READY if not job.error else FAILED
            job.finished = time.time()
            job.done.set()
        return sent

    def fragment_name(self, key_id: str, uid: str, block_no: int, position: int) -> str:
        return fragment_name(key_id, uid, block_no, position)
