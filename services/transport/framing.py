"""Length-prefixed frames on a TCP stream, decoded into caller-sized buffers without copies.

    frame = body length (uint32 BE) | kind (uint8) | body

`FrameDecoder` is driven by an `asyncio.BufferedProtocol`: it hands out the exact region the
next bytes must land in (the 5-byte header, then a body buffer allocated once at its final size),
so a 4 MiB packet is received straight into the buffer it is later parsed from.
"""

from __future__ import annotations

import enum
import struct

from common.packet import MAX_HEADER_SIZE, MAX_PAYLOAD_SIZE

HEADER = struct.Struct(">IB")
DEFAULT_MAX_FRAME = MAX_PAYLOAD_SIZE + MAX_HEADER_SIZE + 1024 + 2048
"""The largest body accepted: a maximal packet payload plus its header and prefix, and room for a
RELAY frame's target IDURL."""


class FrameKind(enum.IntEnum):
    """What a frame carries."""

    HELLO = 1
    AUTH = 2
    READY = 3
    PACKET = 4
    CLOSE = 5
    ROUTE = 6
    """A relayed node asks the peer to relay for it (`services.transport.relay`)."""
    ROUTED = 7
    """The relay's answer to ROUTE, or later notice that it stopped relaying."""
    RELAY = 8
    """A packet for a node this peer relays for: target IDURL, then the packet."""


class FrameError(ValueError):
    """The stream broke framing rules (oversized or unknown frame); the connection must close."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def frame_header(kind: FrameKind, length: int) -> bytes:
    """The header to write before a body of `length` bytes."""
    return HEADER.pack(length, kind)


class FrameDecoder:
    """Incremental frame reader: `buffer()` to fill, `advance(n)` after `n` bytes landed."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._head = bytearray(HEADER.size)
        self._head_view = memoryview(self._head)
        self._body: bytearray | None = None
        self._body_view: memoryview | None = None
        self._kind = FrameKind.CLOSE
        self._pos = 0

    @property
    def pending_body(self) -> tuple[int, int] | None:
        """(received, total) of the body being received, or None between frames."""
        if self._body is None:
            return None
        return self._pos, len(self._body)

    def buffer(self) -> memoryview:
        """The region the next received bytes must be written to (never empty)."""
        if self._body_view is not None:
            return self._body_view[self._pos:]
        return self._head_view[self._pos:]

    def advance(self, count: int) -> tuple[FrameKind, bytearray] | None:
        """Account for `count` bytes written into `buffer()`; return a completed frame, if any.

        Raises:
            FrameError: the header announces an oversized body or an unknown kind.
        """
        self._pos += count
        if self._body is None:
            if self._pos < HEADER.size:
                return None
            length, kind = HEADER.unpack(self._head)
            if length > self.max_frame:
                raise FrameError("oversized")
            try:
                self._kind = FrameKind(kind)
            except ValueError:
                raise FrameError("unknown_kind") from None
            self._pos = 0
            if length == 0:
                return self._kind, bytearray()
            self._body = bytearray(length)
            self._body_view = memoryview(self._body)
            return None
        if self._pos < len(self._body):
            return None
        frame = (self._kind, self._body)
        self._body, self._body_view, self._pos = None, None, 0
        return frame
