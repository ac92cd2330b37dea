"""A hostile raw TCP client gets nothing through, and the node keeps serving its honest peer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from common import codec, crypto, subjects
from common import packet as packets
from services.transport import handshake as hs
from services.transport.framing import FrameKind, frame_header
from services.transport.tcp import TcpOptions
from tests.rawpeer import RawPeer
from tests.helpers import await_for
from tests.service.test_transport_harness import Directory, Node, make_identity, transport_node


def _signed(key: Any, command: str, creator: str, remote: str, payload: Any, **kw: Any) -> packets.Packet:
    pkt = packets.create(command, creator, remote, codec.dumps(payload), key_id="master$x", **kw)
    return pkt.signed(crypto.sign(key, packets.signing_digest(pkt)))


def _wire(pkt: packets.Packet) -> bytes:
    return b"".join(bytes(p) for p in packets.encode(pkt))


async def test_hostile_client_gets_nothing_through(tmp_path):
    directory: Directory = {}
    async with transport_node(tmp_path, "alice", directory) as alice, transport_node(tmp_path, "bob", directory) as bob:
        await _hostile_session(alice, bob, directory)


async def _hostile_session(alice: Node, bob: Node, directory: Directory) -> None:
    delivered: list[dict[str, Any]] = []

    async def on_message(msg: Any) -> None:
        delivered.append(codec.loads(msg.data))
        await msg.respond(codec.dumps({"command": "Ack", "payload": "got it"}))

    await alice.client.nc.subscribe(subjects.inbox("Message"), cb=on_message)
    await alice.client.nc.flush()
    assert (await bob.api("user_ping", user_id=alice.idurl))["command"] == "Ack"

    # 1. garbage, an oversized frame, an unknown frame kind, a packet before any handshake
    # (a 1 MiB HELLO is within the frame limit of an authenticated link, not of a stranger)
    for junk in (b"\xff" * 64, frame_header(FrameKind.PACKET, 1 << 30), b"\x00\x00\x00\x01\x63x",
                 frame_header(FrameKind.PACKET, 3) + b"abc", frame_header(FrameKind.HELLO, 1 << 20)):
        raw = await RawPeer.open(alice.port)
        raw.writer.write(junk)
        await raw.writer.drain()
        assert await raw.closed_by_peer(), junk[:8]
        raw.close()

    # 2. claiming to be bob without bob's key
    m_key, m_doc = make_identity("mallory", 1)
    directory[m_doc["idurl"]] = m_doc
    impostor = await RawPeer.open(alice.port)
    nonce = hs.new_nonce()
    await impostor.frame(FrameKind.HELLO, hs.encode_hello(bob.idurl, nonce, to=alice.idurl))
    _, body = await impostor.read_frame()
    hello = hs.decode_hello(body)
    assert hello.signature == b""  # a stranger gets a nonce, not a signature, before its own proof
    forged = crypto.sign(m_key, hs.transcript(bob.idurl, alice.idurl, nonce, hello.nonce))
    await impostor.frame(FrameKind.AUTH, hs.encode_auth(forged))
    assert await impostor.closed_by_peer()
    impostor.close()

    # 3. an authenticated peer sending forged, replayed, stale, misaddressed and malformed packets
    mallory = await RawPeer.open(alice.port)
    me = m_doc["idurl"]
    await mallory.authenticate(me, m_key, alice.idurl, directory[alice.idurl])
    good = _wire(_signed(m_key, "Message", me, alice.idurl, {"n": 1}, packet_id="p1"))
    await mallory.frame(FrameKind.PACKET, good)
    kind, body = await mallory.read_frame()
    ack = packets.decode(body)
    assert kind == FrameKind.PACKET and ack.command == "Ack" and ack.packet_id == "p1"
    alice_key = crypto.load_public_key(alice.doc["publickey"])
    assert crypto.verify(alice_key, packets.signing_digest(ack), ack.signature)

    tampered = bytearray(_wire(_signed(m_key, "Message", me, alice.idurl, {"n": 2}, packet_id="p2")))
    tampered[-2] ^= 0x01
    hostile = [
        good,                                                                            # replayed
        bytes(tampered),                                                                 # payload altered
        _wire(_signed(m_key, "Message", bob.idurl, alice.idurl, {"n": 3})),              # creator forged
        _wire(_signed(m_key, "Message", me, alice.idurl, {"n": 4}, date=time.time() - 3600)),  # stale
        _wire(_signed(m_key, "Message", me, bob.idurl, {"n": 5})),                       # not for alice
        packets.PREFIX.pack(packets.MAGIC, 5, 0) + b"{nope",                              # malformed
    ]
    for frame in hostile:
        await mallory.frame(FrameKind.PACKET, frame)

    async def all_dropped() -> bool:
        dropped = (await alice.api("packets_stats"))["in"]["dropped"]
        return sum(dropped.get(r, 0) for r in ("replayed", "bad_signature", "stale", "wrong_recipient",
                                                "malformed")) >= len(hostile)

    await await_for(all_dropped, timeout=10, what="hostile packets dropped")
    stats = (await alice.api("packets_stats"))["in"]
    assert stats["dropped"]["replayed"] == 1 and stats["dropped"]["bad_signature"] == 2
    assert stats["dropped"]["stale"] == 1 and stats["dropped"]["wrong_recipient"] == 1
    assert stats["dropped"]["malformed"] == 1 and stats["unknown_packets"] >= 1
    assert stats["dropped"]["handshake_bad_signature"] == 1 and stats["dropped"]["frame_oversized"] == 3
    assert stats["dropped"]["frame_unknown_kind"] == 1 and stats["dropped"]["frame_protocol_violation"] == 1
    assert [d["payload"] for d in delivered] == [{"n": 1}]
    assert (await alice.api("user_status", user_id=bob.idurl))["contact_state"] == "CONNECTED"
    mallory.close()

    # the honest peer is served throughout, both ways
    assert (await bob.send(alice, "Message", payload={"from": "bob"}))["payload"] == "got it"
    assert (await alice.api("user_ping", user_id=bob.idurl))["command"] == "Ack"
    assert delivered[-1]["creator_idurl"] == bob.idurl


async def test_node_without_identity_serves_api_and_refuses_to_send(tmp_path):
    directory: Directory = {}
    async with transport_node(tmp_path, "bob", directory) as bob, \
            transport_node(tmp_path, "carol", directory, with_identity=False) as carol:
        assert carol.transport is not None and carol.transport.connector.state != "CONNECTED"
        stats = await carol.api("packets_stats")
        assert stats["out"]["total_packets"] == 0
        with pytest.raises(Exception) as down:
            await carol.api("network_connected", wait_timeout=0.2)
        assert getattr(down.value, "status", None) == 503
        with pytest.raises(Exception) as refused:
            await carol.send(bob, "Message", payload=1, timeout=2)
        assert (refused.value.status, refused.value.reason) == (409, "identity_not_exist")

        carol.identity.doc = directory[carol.idurl]
        await carol.client.publish_event("local-identity-created", {})
        connected = await carol.api("network_connected", wait_timeout=10)
        assert connected["service_network"] == "started"
        assert (await carol.api("user_ping", user_id=bob.idurl))["command"] == "Ack"


async def test_disconnect_and_reconnect(tmp_path):
    directory: Directory = {}
    async with transport_node(tmp_path, "alice", directory) as alice, transport_node(tmp_path, "bob", directory) as bob:
        await alice.api("user_ping", user_id=bob.idurl)
        off = await alice.api("network_disconnect")
        assert off["network_connector_state"] == "DISCONNECTED"
        with pytest.raises(Exception) as refused:
            await bob.api("user_ping", user_id=alice.idurl, timeout=2)
        assert getattr(refused.value, "status", None) in (503, 504)
        on = await alice.api("network_reconnect")
        assert on["network_connector_state"] == "CONNECTED"
        assert (await bob.api("user_ping", user_id=alice.idurl, timeout=5))["command"] == "Ack"


async def test_strangers_cannot_hold_many_handshakes_open(tmp_path):
    directory: Directory = {}
    async with transport_node(tmp_path, "alice", directory) as alice, transport_node(tmp_path, "bob", directory) as bob:
        limit = TcpOptions().max_handshakes_per_host
        raws = [await RawPeer.open(alice.port) for _ in range(limit + 4)]
        try:
            # The connections past the limit are closed at once; the first ones wait for a HELLO.
            assert all([await _hung_up(raw, 5) for raw in raws[limit:]])
            assert not any([await _hung_up(raw, 0.2) for raw in raws[:2]])
            dropped = (await alice.api("packets_stats"))["in"]["dropped"]
            assert dropped["too_many_handshakes_from_host"] == 4
        finally:
            for raw in raws:
                raw.close()
        # Once the strangers are gone an honest peer from the same address is served again.
        await await_for(lambda: _pings(bob, alice), timeout=15, what="bob served after the strangers left")


async def _hung_up(raw: RawPeer, wait: float) -> bool:
    try:
        return await raw.closed_by_peer(timeout=wait)
    except asyncio.TimeoutError:
        return False


async def _pings(bob: Node, alice: Node) -> bool:
    try:
        return (await bob.api("user_ping", user_id=alice.idurl))["command"] == "Ack"
    except Exception:  # noqa: BLE001 - refused while strangers hold the slots: poll again
        return False
