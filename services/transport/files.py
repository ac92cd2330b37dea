"""The transport's side of the spool: payload files it reads to send and writes when packets arrive.

Bulk payloads never cross the local bus (see `common.spool`). The transport reads the file a local
process names (`transport.send_file`, or `payload_path` in an inbox consumer's reply) only from the
spool or the storage process's state folder, never from elsewhere (the identity process's keys live
beside them); and it writes each arrived binary payload to a new spool file, whose path, size and
SHA-256 (already computed when the signature was checked) it hands on. File I/O runs in worker
threads; no bus code here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import spool
from common.errors import InvalidArgumentError, NodeError
from common.home import NodeHome
from common.packet import MAX_PAYLOAD_SIZE, Packet
from services.transport.gateway import parse_sha256, payload_hash, reply_document
from services.transport.protocol import Buffer

log = logging.getLogger(__name__)

READABLE_STATE = ("storage",)
"""Processes whose state folders may hold files to send (data fragments)."""


class PayloadFiles:
    """Where payload files may be read from, and the spool folder arrived payloads are written to."""

    def __init__(self, spool_dir: Path, readable: Sequence[Path]):
        self.spool_dir = spool_dir
        self.readable = tuple(readable)
        self.staging = spool.StagingBuffers()

    @classmethod
    def for_home(cls, home: NodeHome) -> "PayloadFiles":
        return cls(home.spool, (home.spool, *(home.state_dir(name) for name in READABLE_STATE)))

    def prepare(self, max_age: float = spool.STALE_AFTER) -> int:
        """Make sure the spool exists (0700) and delete crash leftovers; blocking, returns how many."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.spool_dir, 0o700)
        return spool.sweep(self.spool_dir, max_age)

    async def read(self, path: str, payload_sha256: Any = None, direct: bool = False) -> tuple[Buffer, bytes | None]:
        """The content of a file a local process named, and its hash if the process gave it.

        `direct` reads a large file past the page cache (see `spool.read_file`): for a kept file
        sent once, not for a spool file just written (its pages are still in memory).

        Raises:
            InvalidArgumentError: the path is outside the allowed folders or not a regular file
                (`invalid_path`), the file is too large (`payload_too_large`), the hash is not 64 hex
                digits (`invalid_argument`).
            NotFoundError: no such file (`file_not_found`).
        """
        if not isinstance(path, str) or not path:
            raise InvalidArgumentError("path must be a non-empty string", reason="invalid_path")
        try:
            digest = parse_sha256(payload_sha256)
        except ValueError:
            raise InvalidArgumentError("payload_sha256 must be 64 hex digits") from None
        real = spool.resolve_inside(path, self.readable)
        try:
            data = await asyncio.to_thread(spool.read_file, real, MAX_PAYLOAD_SIZE, direct)
        except PermissionError:
            raise InvalidArgumentError(f"{path} cannot be read", reason="invalid_path") from None
        except OSError as err:
            raise NodeError(f"{path} cannot be read: {err.strerror}", reason="file_unreadable") from None
        return data, digest

    async def write(self, pkt: Packet, kept: bool = False) -> dict[str, Any]:
        """Write an arrived packet's payload to a new spool file; the fields that hand it on.

        `kept` says the receiver will likely keep the file (a fragment a supplier stores): a large
        one is then written past the page cache (see `spool.write_new`), while a file that is read
        back and deleted at once is better served from the page cache.

        Returns `{"payload_path", "payload_sha256", "payload_size"}`; whoever gets them owns the file.
        """
        digest = pkt.payload_sha256 or await payload_hash(pkt.payload)
        path = await self._write(pkt.payload, kept)
        return {"payload_path": str(path), "payload_sha256": digest.hex(), "payload_size": len(pkt.payload)}

    async def _write(self, payload: Buffer, kept: bool) -> Path:
        staging = self.staging if kept else None
        try:
            return await asyncio.to_thread(spool.write_new, self.spool_dir, payload, "in", staging)
        except OSError as err:
            log.error("cannot write to the spool %s: %s", self.spool_dir, err.strerror)
            raise NodeError(f"cannot write to the spool: {err.strerror}", reason="spool_failed") from None

    async def load_reply(self, reply: dict[str, Any]) -> dict[str, Any]:
        """An inbox consumer's reply with its `payload_path` file read into `payload_raw`.

        The file is deleted afterwards only when the reply says `"payload_path_temporary": true`.
        A path that cannot be used turns the reply into a Fail.
        """
        doc = reply_document(reply)
        path = doc.get("payload_path")
        if path is None:
            return reply
        temporary = doc.get("payload_path_temporary") is True
        try:
            data, _ = await self.read(path, direct=not temporary)
        except NodeError as err:
            log.warning("inbox consumer replied with an unusable payload_path: %s", err.reason)
            return {"command": "Fail", "payload": f"handler replied with an unusable payload_path: {err.reason}"}
        if temporary:
            spool.remove(Path(path))
        loaded = {k: v for k, v in doc.items() if k not in ("payload_path", "payload_path_temporary")}
        loaded["payload_raw"] = data
        return loaded
