"""A hand-driven TCP client speaking the transport's frame protocol (or not), for hostile-input tests."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from common import crypto
from services.transport import handshake as hs
from services.transport.framing import HEADER, FrameKind, frame_header


class RawPeer:
    """Writes frames (well-formed or not) to a node's TCP port and reads what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "RawPeer":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def frame(self, kind: FrameKind, *parts: bytes) -> None:
        self.writer.write(frame_header(kind, sum(len(p) for p in parts)) + b"".join(parts))
        await self.writer.drain()

    async def read_frame(self, timeout: float = 10) -> tuple[int, bytes]:
        length, kind = HEADER.unpack(await asyncio.wait_for(self.reader.readexactly(HEADER.size), timeout))
        return kind, await asyncio.wait_for(self.reader.readexactly(length), timeout)

    async def authenticate(self, me: str, key: Any, target: str, target_doc: dict[str, Any]) -> None:
        """Run the handshake honestly as `me` (private `key`) with the node `target` (its identity doc)."""
        nonce = hs.new_nonce()
        await self.frame(FrameKind.HELLO, hs.encode_hello(me, nonce, to=target))
        kind, body = await self.read_frame()
        hello = hs.decode_hello(body)
        assert kind == FrameKind.HELLO and hello.idurl == target and not hello.signature
        proof = crypto.sign(key, hs.transcript(me, target, nonce, hello.nonce))
        await self.frame(FrameKind.AUTH, hs.encode_auth(proof))
        kind, body = await self.read_frame()
        assert kind == FrameKind.READY
        their_key = crypto.load_public_key(target_doc["publickey"])
        assert crypto.verify(their_key, hs.transcript(target, me, hello.nonce, nonce), hs.decode_ready(body))

    async def closed_by_peer(self, timeout: float = 10) -> bool:
        """True once the node hangs up on us."""
        with contextlib.suppress(ConnectionError):
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        return True

    def close(self) -> None:
        self.writer.close()
