"""Transport between real nodes: pings, presence, statistics, key sharing, hostile clients."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import urllib.request
import uuid
from typing import Any

from common import codec, crypto
from common import packet as packets
from services.identity import document
from services.transport import handshake as hs
from services.transport.framing import FrameKind, frame_header
from tests.rawpeer import RawPeer
from tests.helpers import wait_for


def _state(client, user_id: str) -> str:
    status, doc = client.call("user_status", user_id=user_id)
    return doc["result"]["contact_state"] if status == 200 else ""


def test_ping_between_every_pair(net, identities):
    for a, b in itertools.permutations(net.nodes, 2):
        result = a.ok("user_ping", user_id=identities[b.name]["global_id"], timeout=20)
        assert result["command"] == "Ack" and result["idurl"] == identities[b.name]["idurl"]
    for client in net.nodes:
        assert client.ok("network_connected", wait_timeout=5)
        stats = client.ok("packets_stats")
        assert stats["out"]["total_packets"] >= len(net.nodes) - 1
        assert stats["in"]["total_packets"] >= len(net.nodes) - 1
        assert len(stats["out"]["peers"]) >= len(net.nodes) - 1
    peers = {c["idurl"] for c in net.nodes[0].ok("connections_list")}
    assert {identities[c.name]["idurl"] for c in net.nodes[1:]} <= peers


def test_status_follows_a_stopped_transport(net, identities):
    watcher, target = net.nodes[1], net.nodes[4]
    target_id = identities[target.name]["global_id"]
    watcher.ok("user_ping", user_id=target_id, timeout=20)
    assert _state(watcher, target_id) == "CONNECTED"
    sup = target.home
    from deploy.node import supervisor

    supervisor(sup).call_sync("stopProcess", "transport", True)
    try:
        wait_for(lambda: watcher.call("user_status_check", user_id=target_id, timeout=3)[0] in (200, 503, 504)
                 and _state(watcher, target_id) == "OFFLINE", timeout=60, interval=0.5, what="target offline")
    finally:
        supervisor(sup).call_sync("startProcess", "transport", True)
    wait_for(lambda: watcher.call("user_status_check", user_id=target_id, timeout=5)[0] == 200
             and _state(watcher, target_id) == "CONNECTED", timeout=60, interval=0.5, what="target back online")
    assert target.ok("user_ping", user_id=identities[watcher.name]["global_id"], timeout=20)["command"] == "Ack"


def test_stun_answer_comes_from_a_peer(net):
    result = net.nodes[3].ok("network_stun")
    assert result["ip"] == "127.0.0.1" and int(result["port"]) > 0


def test_network_status_details(net, identities):
    # The DHT fills its routing table a few seconds after the network starts: poll for it.
    status = wait_for(lambda: (s := net.nodes[2].ok("network_status", tcp=True, dht=True))["dht"]["layers"][0]
                      ["contacts"] > 0 and s, timeout=30, interval=0.5, what="node-2's DHT contacts")
    assert status["global_id"] == identities[net.nodes[2].name]["global_id"]
    assert status["dht"]["layers"][0]["contacts"] > 0


def test_key_share_and_audit(net, identities):
    owner, friend = net.nodes[1], net.nodes[2]
    alias = "shared" + uuid.uuid4().hex[:6]
    key = owner.ok("key_create", key_alias=alias, key_size=1024, label="for a friend")
    try:
        friend_id = identities[friend.name]["global_id"]
        owner.ok("key_share", key_id=key["key_id"], trusted_user_id=friend_id, include_private=True)
        got = friend.ok("key_get", key_id=key["key_id"])
        assert got["public"] == key["public"] and got["label"] == "for a friend"
        audit = owner.ok("key_audit", key_id=key["key_id"], untrusted_user_id=friend_id, is_private=True)
        assert audit["audited"] is True
        stranger = identities[net.nodes[3].name]["global_id"]
        status, doc = owner.call("key_audit", key_id=key["key_id"], untrusted_user_id=stranger, is_private=True)
        assert status == 409 and doc["reason"] == "key_audit_failed"
    finally:
        owner.call("key_erase", key_id=key["key_id"])
        friend.call("key_erase", key_id=key["key_id"])


# ---- a hostile client on a node's TCP port -----------------------------------------------------

def _tcp_port(client) -> int:
    return int(client.ok("config_get", key="services/tcp-connections/tcp-port")["value"])


def _register(server: str, name: str, key: Any) -> str:
    doc = document.new_document([f"{server}/{name}.xml"], ["tcp://127.0.0.1:1"], key)
    req = urllib.request.Request(server + "/upload", data=doc.to_xml().encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as response:
        assert response.status == 200
    return doc.idurl


def _wire(key: Any, command: str, creator: str, remote: str, payload: Any, **kw: Any) -> bytes:
    pkt = packets.create(command, creator, remote, codec.dumps(payload), key_id="master$x", **kw)
    pkt = pkt.signed(crypto.sign(key, packets.signing_digest(pkt)))
    return b"".join(bytes(p) for p in packets.encode(pkt))


async def _hostile(port: int, victim: str, honest: str, server: str) -> None:
    for junk in (b"\xff" * 64, frame_header(FrameKind.PACKET, 1 << 30), frame_header(FrameKind.PACKET, 3) + b"abc"):
        raw = await RawPeer.open(port)
        raw.writer.write(junk)
        await raw.writer.drain()
        assert await raw.closed_by_peer()
        raw.writer.close()
    key = crypto.generate_private_key(1024)
    me = _register(server, "mallory" + uuid.uuid4().hex[:6], key)
    # Claim to be an honest node without its key.
    impostor = await RawPeer.open(port)
    nonce = hs.new_nonce()
    await impostor.frame(FrameKind.HELLO, hs.encode_hello(honest, nonce, to=victim))
    _, body = await impostor.read_frame()
    hello = hs.decode_hello(body)
    await impostor.frame(FrameKind.AUTH, hs.encode_auth(crypto.sign(key, hs.transcript(honest, victim, nonce,
                                                                                       hello.nonce))))
    assert await impostor.closed_by_peer()
    # Authenticate as ourselves, then send one good packet, its replay, and forgeries.
    peer = await RawPeer.open(port)
    nonce = hs.new_nonce()
    await peer.frame(FrameKind.HELLO, hs.encode_hello(me, nonce, to=victim))
    _, body = await peer.read_frame()
    hello = hs.decode_hello(body)
    await peer.frame(FrameKind.AUTH, hs.encode_auth(crypto.sign(key, hs.transcript(me, victim, nonce, hello.nonce))))
    kind, _ = await peer.read_frame()
    assert kind == FrameKind.READY
    good = _wire(key, "Identity", me, victim, {"ping": 1}, packet_id="m1")
    await peer.frame(FrameKind.PACKET, good)
    kind, body = await peer.read_frame()
    assert packets.decode(body).command == "Ack"
    other = crypto.generate_private_key(1024)
    for frame in (good, _wire(other, "Identity", me, victim, {"ping": 2}),
                  _wire(key, "Identity", honest, victim, {"ping": 3}),
                  _wire(key, "Identity", me, victim, {"ping": 4}, date=time.time() - 3600)):
        await peer.frame(FrameKind.PACKET, frame)
    with contextlib.suppress(asyncio.TimeoutError):
        kind, body = await asyncio.wait_for(peer.read_frame(), 2)
        raise AssertionError(f"a hostile packet was answered: {packets.decode(body).command}")
    peer.writer.close()


def test_hostile_client_gets_nothing_through(net, identities):
    victim, honest = net.nodes[2], net.nodes[3]
    server = "http://" + victim.ok("network_configuration")["identity_servers"][0]
    before = victim.ok("packets_stats")["in"]
    asyncio.run(_hostile(_tcp_port(victim), identities[victim.name]["idurl"], identities[honest.name]["idurl"],
                         server))
    after = victim.ok("packets_stats")["in"]
    dropped_before, dropped_after = before.get("dropped", {}), after.get("dropped", {})
    assert dropped_after.get("replayed", 0) > dropped_before.get("replayed", 0)
    assert dropped_after.get("bad_signature", 0) >= dropped_before.get("bad_signature", 0) + 2
    assert dropped_after.get("stale", 0) > dropped_before.get("stale", 0)
    assert victim.ok("process_health") is None
    assert honest.ok("user_ping", user_id=identities[victim.name]["global_id"], timeout=20)["command"] == "Ack"
    assert victim.ok("user_ping", user_id=identities[honest.name]["global_id"], timeout=20)["command"] == "Ack"
