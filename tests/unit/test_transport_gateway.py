"""Two gateways over an in-memory transport: each payload is hashed once per side, and the hash is
handed on; a payload altered after signing is dropped as bad_signature."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from common import codec, crypto
from common import packet as packets
from common.packet import Packet
from services.transport.gateway import Gateway
from services.transport.protocol import Buffer

A, B = "http://h:1/a.xml", "http://h:1/b.xml"


@dataclass(eq=False)  # hashable like a real link: the gateway keys per-link state by it
class MemLink:
    peer_idurl: str
    proto: str = "mem"
    host: str = "memory"
    bytes_in: int = 0
    bytes_out: int = 0

    def info(self) -> dict[str, Any]:
        return {"idurl": self.peer_idurl}


@dataclass
class MemTransport:
    """Hands each packet's bytes to the peer gateway's `on_packet`, optionally altered on the way."""

    me: str
    peers: dict[str, Gateway]
    tamper: bool = False
    proto: str = "mem"
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def accepts(self, contact: str) -> bool:
        return contact.startswith("mem://")

    async def send(self, idurl: str, contacts: list[str], parts: list[Buffer]) -> MemLink:
        frame = bytearray(b"".join(bytes(p) for p in parts))
        if self.tamper:
            frame[-1] ^= 0x01
        task = asyncio.ensure_future(self.peers[idurl].on_packet(MemLink(self.me), frame))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return MemLink(idurl)

    async def stop(self) -> None: ...

    def connected(self, idurl: str) -> bool:
        return True


class Directory:
    def __init__(self, me: str, keys: dict[str, Any]):
        self.me, self.keys = me, keys

    async def my_identity(self) -> dict[str, Any]:
        return {"idurl": self.me, "global_id": self.me.rsplit("/", 1)[-1]}

    async def sign(self, data: bytes) -> bytes:
        return crypto.sign(self.keys[self.me], data)

    async def fetch(self, idurl: str, refresh: bool = False) -> dict[str, Any]:
        return {"idurl": idurl, "contacts": [f"mem://{idurl}"],
                "publickey": crypto.public_key_to_ssh(self.keys[idurl].public_key())}


class Inbox:
    def __init__(self) -> None:
        self.delivered: list[Packet] = []

    async def deliver(self, pkt: Packet, timeout: float) -> dict[str, Any]:
        self.delivered.append(pkt)
        return {"command": "Ack", "payload_raw": bytes(pkt.payload[:16]),
                "payload_sha256": hashlib.sha256(pkt.payload[:16]).hexdigest()}


@pytest.fixture(scope="module")
def keys():
    return {A: crypto.generate_private_key(1024), B: crypto.generate_private_key(1024)}


async def _pair(keys: dict[str, Any]) -> tuple[Gateway, Gateway, Inbox]:
    peers: dict[str, Gateway] = {}
    inbox = Inbox()
    alice, bob = Gateway(Directory(A, keys), Inbox()), Gateway(Directory(B, keys), inbox)
    peers.update({A: alice, B: bob})
    for gateway, me in ((alice, A), (bob, B)):
        gateway.transports.append(MemTransport(me, peers))
        await gateway.load_identity()
    return alice, bob, inbox


async def test_each_payload_is_hashed_once_per_side_and_the_hash_is_handed_on(keys, monkeypatch):
    alice, bob, inbox = await _pair(keys)
    hashed: list[int] = []
    real = packets.payload_digest

    def counting(payload: Buffer) -> bytes:
        hashed.append(len(payload))
        return real(payload)

    monkeypatch.setattr(packets, "payload_digest", counting)
    fragment = bytes(range(256)) * 4096  # 1 MiB, hashed in a worker thread
    reply = await alice.send(B, "Data", fragment, binary=True, timeout=5)
    assert reply is not None and reply.command == "Ack" and bytes(reply.payload) == fragment[:16]
    # alice: request out + reply in; bob: request in (the reply's hash came from the inbox consumer)
    assert sorted(hashed) == [16, len(fragment), len(fragment)]
    assert inbox.delivered[0].payload_sha256 == hashlib.sha256(fragment).digest()
    assert reply.payload_sha256 == hashlib.sha256(fragment[:16]).digest()

    hashed.clear()
    await alice.send(B, "Data", fragment, binary=True, timeout=5, payload_sha256=hashlib.sha256(fragment).digest())
    assert sorted(hashed) == [16, len(fragment)]  # the caller's hash is used as is


async def test_payload_altered_after_signing_is_dropped_as_bad_signature(keys):
    alice, bob, inbox = await _pair(keys)
    transport = alice.transports[0]
    assert isinstance(transport, MemTransport)
    transport.tamper = True
    with pytest.raises(Exception) as timed_out:
        await alice.send(B, "Data", b"\x00" * 1000, binary=True, timeout=0.5)
    assert getattr(timed_out.value, "reason", None) == "timeout"
    assert bob.stats.incoming.dropped["bad_signature"] == 1 and inbox.delivered == []
    transport.tamper = False
    reply = await alice.send(B, "Message", codec.dumps({"n": 1}), timeout=5)
    assert reply is not None and reply.command == "Ack" and len(inbox.delivered) == 1


class BlockedInbox(Inbox):
    """Holds every delivery until `release` is set: a slow local consumer."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def deliver(self, pkt: Packet, timeout: float) -> dict[str, Any]:
        self.delivered.append(pkt)
        await self.release.wait()
        return {"command": "Ack", "payload": "ok"}


async def test_one_link_has_a_bounded_number_of_deliveries_in_flight(keys):
    inbox = BlockedInbox()
    bob = Gateway(Directory(B, keys), inbox)
    await bob.load_identity()
    limit = bob.options.max_deliveries_per_link
    link = MemLink(A)
    frames = []
    for n in range(limit + 1):
        pkt = packets.create("Message", A, B, codec.dumps({"n": n}), key_id="master$a", packet_id=f"p{n}")
        pkt = pkt.hashed(hashlib.sha256(pkt.payload).digest())
        pkt = pkt.signed(crypto.sign(keys[A], packets.signing_digest(pkt, pkt.payload_sha256)))
        frames.append(bytearray(b"".join(bytes(p) for p in packets.encode(pkt))))
    for frame in frames[:limit]:
        await asyncio.wait_for(bob.on_packet(link, frame), 5)  # each handed on at once
    blocked = asyncio.ensure_future(bob.on_packet(link, frames[limit]))
    await asyncio.sleep(0)  # let it run up to the wait for a free slot
    for _ in range(50):
        await asyncio.sleep(0)
    assert not blocked.done() and len(inbox.delivered) == limit  # the link reads nothing further
    inbox.release.set()
    await asyncio.wait_for(blocked, 5)
    await asyncio.wait_for(_until(lambda: len(inbox.delivered) == limit + 1), 5)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
