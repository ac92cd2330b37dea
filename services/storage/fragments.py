"""Moving fragments to and from suppliers: names, the wire the jobs use, and block fetch/repair.

Fragment names are opaque to suppliers: `<key tag>.<version uid>.<block>.<position>`, where the key
tag is a hash of the key id (so one grant can open every fragment of a share and nothing else).
The bytes never cross the bus: outgoing fragments are written to the spool folder and handed to
the transport by path; incoming ones arrive as spool files the transport wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from common.errors import NodeError
from services.storage import blocks
from services.storage.catalog import Block, Version

log = logging.getLogger(__name__)

SEND_TIMEOUT = 60.0
FETCH_TIMEOUT = 60.0


def key_tag(key_id: str) -> str:
    """The fragment-name prefix of a key: its alias and owner name, not the owner's server.

    `alias$name@host_port` loses `@host_port`, so the tag survives an identity rotation (which moves
    the owner to another server under the same name); a supplier keeps each customer's objects
    apart, so the owner's own keys are all a tag must tell apart.
    """
    return hashlib.sha256(key_id.split("@", 1)[0].encode()).hexdigest()[:16]


def fragment_name(key_id: str, uid: str, block_no: int, position: int) -> str:
    return f"{key_tag(key_id)}.{uid}.{block_no}.{position}"


def version_prefix(key_id: str, uid: str) -> str:
    return f"{key_tag(key_id)}.{uid}."


def index_name(key_id: str) -> str:
    return f"{key_tag(key_id)}.index"


class Wire(Protocol):
    """Packets to suppliers, through the transport process."""

    async def send_file(self, idurl: str, name: str, path: Path, sha256: str, timeout: float) -> dict[str, Any]: ...

    async def fetch_file(self, idurl: str, name: str, customer_idurl: str | None,
                         timeout: float) -> dict[str, Any]: ...

    async def request(self, idurl: str, command: str, payload: Any, timeout: float) -> dict[str, Any]: ...


class FragmentError(NodeError):
    """A block that could not be stored or read back."""

    def __init__(self, message: str, reason: str = "fragments_unavailable"):
        super().__init__(message, reason=reason, status=503)


def _write(path: Path, data: blocks.Buffer) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def write_slots(paths: Sequence[Path], fragments: Sequence[blocks.Buffer]) -> None:
    """Rewrite each slot file with one fragment (blocking): same pages, new content and length."""
    for path, data in zip(paths, fragments, strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data).cast("B")
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], done)
            os.ftruncate(fd, len(view))
        finally:
            os.close(fd)


class SpoolSlots:
    """Spool files an upload reuses for the fragments of its blocks in flight, one set per block.

    Rewriting a file in place keeps its page-cache pages; a new file per fragment would fill fresh
    ones, which costs more than encrypting the bytes. A set is taken before a block is written
    and given back once its fragments were sent; `remove` deletes the files when the upload ends.
    """

    def __init__(self, folder: Path, sets: int, per_set: int):
        prefix = f"out-{secrets.token_hex(8)}"
        self._free = [[folder / f"{prefix}-{s}-{p}" for p in range(per_set)] for s in range(sets)]
        self._all = [path for paths in self._free for path in paths]

    def take(self) -> list[Path]:
        """A free set; the caller bounds the sets in use (by the upload window)."""
        return self._free.pop()

    def give(self, paths: list[Path]) -> None:
        self._free.append(paths)

    def remove(self) -> None:
        """Delete every slot file (blocking)."""
        for path in self._all:
            path.unlink(missing_ok=True)


def _read_and_remove(path: Path) -> bytes:
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


class Mover:
    """Sends the fragments of a block, fetches enough of them back, and repairs bad ones."""

    def __init__(self, wire: Wire, spool: Path):
        self.wire = wire
        self.spool = spool
        self.spool.mkdir(parents=True, exist_ok=True)

    def slots(self, sets: int, per_set: int) -> SpoolSlots:
        """Reusable spool files for an upload (see `SpoolSlots`)."""
        return SpoolSlots(self.spool, sets, per_set)

    async def send(self, idurl: str, name: str, data: blocks.Buffer, sha256: str) -> tuple[bool, str]:
        """Store one fragment on one supplier; (acknowledged, refusal reason)."""
        path = self.spool / f"out-{secrets.token_hex(8)}"
        await asyncio.to_thread(_write, path, data)
        try:
            return await self.send_file(idurl, name, path, sha256)
        finally:
            path.unlink(missing_ok=True)

    async def send_file(self, idurl: str, name: str, path: Path, sha256: str) -> tuple[bool, str]:
        """Store the fragment written at `path` (kept) on one supplier; (acknowledged, refusal reason)."""
        try:
            reply = await self.wire.send_file(idurl, name, path, sha256, SEND_TIMEOUT)
        except NodeError as err:
            return False, err.reason or "unreachable"
        payload = reply.get("payload")
        if reply.get("command") == "Ack":
            # The supplier acknowledges once the fragment is durable, naming what it stored.
            if isinstance(payload, dict) and payload.get("sha256") not in (None, sha256):
                return False, "refused:sha256_mismatch"
            return True, ""
        return False, "refused:" + str(payload.get("reason") if isinstance(payload, dict) else payload)

    async def send_block(self, key_id: str, uid: str, block_no: int, hashes: list[str], paths: list[Path],
                         suppliers: list[str]) -> list[tuple[str, bool, str]]:
        """Send fragment i (written at `paths[i]`) to supplier i, all at once; (idurl, acknowledged,
        reason) per position."""
        results = await asyncio.gather(*(
            self.send_file(idurl, fragment_name(key_id, uid, block_no, pos), paths[pos], hashes[pos])
            if idurl else _vacant()
            for pos, idurl in enumerate(suppliers)))
        return [(suppliers[i], ok, reason) for i, (ok, reason) in enumerate(results)]

    async def fetch(self, idurl: str, name: str, expected_sha256: str,
                    customer_idurl: str | None) -> tuple[bytes | None, str]:
        """One fragment, checked against its hash; (bytes or None, reason)."""
        try:
            reply = await self.wire.fetch_file(idurl, name, customer_idurl, FETCH_TIMEOUT)
        except NodeError as err:
            return None, err.reason or "unreachable"
        path = reply.get("payload_path")
        if reply.get("command") != "Data" or not path:
            payload = reply.get("payload")
            return None, str(payload.get("reason") if isinstance(payload, dict) else payload or "refused")
        data = await asyncio.to_thread(_read_and_remove, Path(path))
        got = str(reply.get("payload_sha256") or "") or blocks.sha256_hex(data)
        if got != expected_sha256:
            return None, "corrupt"
        return data, ""

    async def fetch_shares(self, key_id: str, version: Version, block: Block, suppliers: list[str],
                           customer_idurl: str | None, skip: set[int] = frozenset(),  # type: ignore[assignment]
                           offline: set[str] = frozenset()) -> tuple[dict[int, bytes], dict[int, str]]:  # type: ignore[assignment]
        """Any k verified fragments of a block: primaries first, others as fallbacks.

        Returns (position -> bytes, position -> failure reason of the ones that failed).
        """
        k = blocks.data_shares(version.suppliers)
        order = [p for p in range(version.suppliers) if p not in skip and p < len(suppliers) and suppliers[p]]
        order.sort(key=lambda p: (suppliers[p] in offline, p >= k, p))
        shares: dict[int, bytes] = {}
        failed: dict[int, str] = {}
        pending: dict[asyncio.Task[tuple[bytes | None, str]], int] = {}

        def launch() -> None:
            while order and len(shares) + len(pending) < k:
                pos = order.pop(0)
                name = fragment_name(key_id, version.uid, block.block_no, pos)
                task = asyncio.ensure_future(self.fetch(suppliers[pos], name, block.hashes[pos], customer_idurl))
                pending[task] = pos

        launch()
        try:
            while pending and len(shares) < k:
                done, _ = await asyncio.wait(list(pending), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    pos = pending.pop(task)
                    data, reason = task.result()
                    if data is None:
                        failed[pos] = reason
                    else:
                        shares[pos] = data
                launch()
        finally:
            for task in pending:
                task.cancel()
        return shares, failed

    async def repair(self, key_id: str, version: Version, block: Block, shares: dict[int, bytes],
                     positions: list[int], suppliers: list[str]) -> list[int]:
        """Recompute fragments at `positions` from `shares` and send them; the positions acknowledged."""
        if not positions:
            return []
        rebuilt = await asyncio.to_thread(blocks.rebuild_fragments, shares, version.suppliers, block.cipher_size,
                                          positions)
        stored: list[int] = []
        for pos, data in rebuilt.items():
            if pos >= len(suppliers) or not suppliers[pos]:
                continue
            if blocks.sha256_hex(data) != block.hashes[pos]:
                log.warning("rebuilt fragment %d of block %d does not match its hash", pos, block.block_no)
                continue
            ok, reason = await self.send(suppliers[pos], fragment_name(key_id, version.uid, block.block_no, pos),
                                         data, block.hashes[pos])
            if ok:
                stored.append(pos)
            else:
                log.info("repair of fragment %d of block %d failed: %s", pos, block.block_no, reason)
        return stored


async def _vacant() -> tuple[bool, str]:
    return False, "vacant"
