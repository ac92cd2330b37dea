"""The seams of the transport process, as Protocols: a network transport (TCP today, a relay or
proxy transport beside it later), the credentials a transport authenticates links with, and the
sink of what links receive.

A new transport implements `Transport`; the gateway picks one by the scheme of a peer's contact
(`tcp://…`, `proxy://…`) and never needs to know how it moves bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, Union

Buffer = Union[bytes, bytearray, memoryview]


class PeerUnreachableError(ConnectionError):
    """No authenticated link to the peer could be used or opened."""


class Link(Protocol):
    """One authenticated channel to a peer."""

    proto: str
    peer_idurl: str
    host: str
    bytes_in: int
    bytes_out: int

    def info(self) -> dict[str, Any]: ...


class Credentials(Protocol):
    """What a transport needs to prove who we are and check who the peer is."""

    def local_idurl(self) -> str | None: ...

    async def sign(self, digest: bytes) -> bytes: ...

    async def verify(self, idurl: str, digest: bytes, signature: bytes) -> bool: ...

    async def contacts(self, idurl: str) -> list[str]: ...

    def is_me(self, idurl: str) -> bool:
        """Our IDURL, or an earlier one our identity still lists as a source (after a rotation)."""
        ...

    async def moved(self, expected: str, actual: str) -> bool:
        """Is `actual` the node that was `expected` (its identity lists `expected` as a source)?"""
        ...


class LinkEvents(Protocol):
    """Where a transport reports what happens on its links."""

    async def on_packet(self, link: Link, frame: bytearray) -> None: ...

    def on_link_up(self, link: Link) -> None: ...

    def on_link_down(self, link: Link) -> None: ...

    def on_link_rejected(self, proto: str, host: str, reason: str, size: int = 0) -> None: ...


class Transport(Protocol):
    """A way to move signed packets to peers."""

    proto: str

    def accepts(self, contact: str) -> bool: ...

    def listening(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, idurl: str, contacts: list[str], parts: list[Buffer]) -> Link: ...

    def links(self) -> Sequence[Link]: ...

    def connected(self, idurl: str) -> bool: ...

    def streams(self) -> list[dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...
