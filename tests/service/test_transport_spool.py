"""Bulk payloads between a node's processes go through spool files; only control crosses the bus.

Two nodes, each on its own nats-server with the real transport service: `transport.send_file`,
binary inbox deliveries as spool files, replies named by `payload_path`, `send(reply_file=True)`,
the paths refused, the files cleaned up, and a tampered binary payload dropped at arrival.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from common import codec, crypto, spool, subjects
from common import packet as packets
from common.errors import NodeError
from services.transport.framing import FrameKind
from tests.helpers import await_for
from tests.rawpeer import RawPeer
from tests.service.test_transport_harness import Directory, Node, make_identity, transport_node

MIB = 1024 * 1024


@pytest.fixture
async def pair(tmp_path):
    directory: Directory = {}
    async with transport_node(tmp_path, "alice", directory) as alice, transport_node(tmp_path, "bob", directory) as bob:
        yield alice, bob, directory


async def send_file(node: Node, remote: Node, command: str, path: Path | str, **kwargs: Any) -> Any:
    request = dict(remote_idurl=remote.idurl, command=command, path=str(path), **kwargs)
    return await node.client.call(subjects.internal("transport", "send_file"), request, timeout=40)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


async def test_send_file_arrives_as_spool_file_and_the_reply_file_comes_back(pair):
    alice, bob, _ = pair
    fragment = os.urandom(5 * MIB)
    outgoing = spool.write_new(alice.home.spool, fragment, prefix="out")
    answer = os.urandom(3 * MIB + 17)
    stored = bob.home.state("storage") / "reply-fragment"
    stored.write_bytes(answer)
    kept = bob.home.state("storage") / "kept"
    seen: list[dict[str, Any]] = []

    async def on_data(msg: Any) -> None:
        body = codec.loads(msg.data)
        path = Path(body["payload_path"])
        body["received"] = path.read_bytes()
        body["mode"] = mode(path)
        seen.append(body)
        if len(seen) == 2:
            path.rename(kept)  # the storage process keeps a fragment by moving it into place
        reply = {"command": "Ack", "payload_path": str(stored), "payload_sha256": sha256(answer)}
        await msg.respond(codec.dumps({"result": reply}))  # as a bus endpoint would answer

    await bob.client.nc.subscribe(subjects.inbox("Data"), queue="storage", cb=on_data)
    await bob.client.nc.flush()

    reply = await send_file(alice, bob, "Data", outgoing, packet_id="frag-1", payload_sha256=sha256(fragment))
    body = seen[0]
    assert body["received"] == fragment and body["payload_sha256"] == sha256(fragment)
    assert body["payload_size"] == len(fragment) and body["binary"] is True and body["mode"] == 0o600
    assert body["command"] == "Data" and body["packet_id"] == "frag-1" and body["creator_idurl"] == alice.idurl
    assert "payload" not in body and "payload_b64" not in body
    assert Path(body["payload_path"]).parent == bob.home.spool
    assert not Path(body["payload_path"]).exists()  # the consumer left it: the transport removed it
    assert stored.read_bytes() == answer  # not temporary: the consumer's file stays

    assert reply["command"] == "Ack" and reply["packet_id"] == "frag-1"
    assert set(reply) == {"command", "packet_id", "payload_path", "payload_sha256", "payload_size"}
    back = Path(reply["payload_path"])
    assert back.parent == alice.home.spool and mode(back) == 0o600
    assert back.read_bytes() == answer and reply["payload_sha256"] == sha256(answer)
    assert reply["payload_size"] == len(answer)
    assert outgoing.read_bytes() == fragment  # send_file never deletes what it sent
    back.unlink()  # the caller owns the reply file

    # Without a hash the transport hashes the file itself; a consumer may rename the file away.
    again = await send_file(alice, bob, "Data", outgoing)
    assert kept.read_bytes() == fragment and sha256(seen[1]["received"]) == seen[1]["payload_sha256"]
    assert Path(again["payload_path"]).read_bytes() == answer
    assert list(bob.home.spool.iterdir()) == []


async def test_send_with_reply_file_returns_binary_replies_as_files(pair):
    alice, bob, _ = pair
    fragment = os.urandom(2 * MIB)
    stored = bob.home.state("storage") / "f1"
    stored.write_bytes(fragment)
    temporary = spool.write_new(bob.home.spool, b"temporary", prefix="out")

    async def on_retrieve(msg: Any) -> None:
        wanted = codec.loads(msg.data)["payload"]["id"]
        if wanted == "f1":
            reply: dict[str, Any] = {"command": "Data", "payload_path": str(stored)}
        elif wanted == "tmp":
            reply = {"command": "Data", "payload_path": str(temporary), "payload_path_temporary": True}
        elif wanted == "outside":
            reply = {"command": "Data", "payload_path": "/etc/hostname"}
        else:
            reply = {"command": "Fail", "payload": f"no {wanted}"}
        await msg.respond(codec.dumps(reply))

    await bob.client.nc.subscribe(subjects.inbox("Retrieve"), queue="storage", cb=on_retrieve)
    await bob.client.nc.flush()

    reply = await alice.send(bob, "Retrieve", payload={"id": "f1"}, packet_id="r-1", reply_file=True)
    assert reply["command"] == "Data" and reply["packet_id"] == "r-1" and "payload_b64" not in reply
    assert Path(reply["payload_path"]).read_bytes() == fragment
    assert reply["payload_sha256"] == sha256(fragment) and reply["payload_size"] == len(fragment)
    assert stored.exists()

    inline = await alice.send(bob, "Retrieve", payload={"id": "f1"})  # without reply_file: as before
    assert crypto.unb64(inline["payload_b64"]) == fragment and "payload_path" not in inline

    missing = await alice.send(bob, "Retrieve", payload={"id": "f2"}, reply_file=True)
    assert missing == {"command": "Fail", "packet_id": missing["packet_id"], "payload": "no f2"}

    once = await alice.send(bob, "Retrieve", payload={"id": "tmp"}, reply_file=True)
    assert Path(once["payload_path"]).read_bytes() == b"temporary" and not temporary.exists()

    refused = await alice.send(bob, "Retrieve", payload={"id": "outside"}, reply_file=True)
    assert refused["command"] == "Fail" and "invalid_path" in refused["payload"]


async def test_paths_outside_the_spool_and_storage_state_are_refused(pair, tmp_path):
    alice, bob, _ = pair
    outside = tmp_path / "secret"
    outside.write_bytes(b"not for peers")
    keys = alice.home.state("identity") / "master.key"
    keys.write_bytes(b"private")
    link = alice.home.spool / "link"
    link.symlink_to(outside)
    for path in (outside, keys, link, "relative/path", alice.home.root / "spool" / ".." / "metadata" / "bustoken"):
        with pytest.raises(NodeError) as refused:
            await send_file(alice, bob, "Data", path)
        assert (refused.value.status, refused.value.reason) == (400, "invalid_path"), path
    with pytest.raises(NodeError) as missing:
        await send_file(alice, bob, "Data", alice.home.spool / "gone")
    assert (missing.value.status, missing.value.reason) == (404, "file_not_found")
    with pytest.raises(NodeError) as bad_hash:
        await send_file(alice, bob, "Data", link.parent, payload_sha256="zz")
    assert bad_hash.value.status == 400
    with pytest.raises(NodeError) as bad_command:
        await send_file(alice, bob, "Nope", outside)
    assert bad_command.value.reason == "invalid_command"
    assert (await alice.api("packets_stats"))["out"]["total_packets"] == 0


async def test_stale_spool_files_are_removed_at_start(pair):
    _, bob, _ = pair
    old = spool.write_new(bob.home.spool, b"left by a crash", prefix="in")
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    fresh = spool.write_new(bob.home.spool, b"in use", prefix="out")
    await bob.stop_transport()
    await bob.start_transport()
    assert not old.exists() and fresh.exists()
    assert mode(bob.home.spool) == 0o700


async def test_tampered_binary_payload_is_dropped_as_bad_signature(pair):
    alice, _, directory = pair
    delivered: list[dict[str, Any]] = []

    async def on_data(msg: Any) -> None:
        body = codec.loads(msg.data)
        body["received"] = Path(body["payload_path"]).read_bytes()
        delivered.append(body)
        await msg.respond(codec.dumps({"command": "Ack", "payload": "stored"}))

    await alice.client.nc.subscribe(subjects.inbox("Data"), queue="storage", cb=on_data)
    await alice.client.nc.flush()
    m_key, m_doc = make_identity("mallory", 1)
    directory[m_doc["idurl"]] = m_doc
    mallory = await RawPeer.open(alice.port)
    try:
        await mallory.authenticate(m_doc["idurl"], m_key, alice.idurl, alice.doc)
        fragment = os.urandom(MIB)

        def wire(packet_id: str) -> bytearray:
            pkt = packets.create("Data", m_doc["idurl"], alice.idurl, fragment, key_id="master$x", binary=True,
                                 packet_id=packet_id)
            pkt = pkt.signed(crypto.sign(m_key, packets.signing_digest(pkt)))
            return bytearray(b"".join(bytes(p) for p in packets.encode(pkt)))

        tampered = wire("d-1")
        tampered[-len(fragment) // 2] ^= 0x01  # one bit in the middle of the payload
        await mallory.frame(FrameKind.PACKET, bytes(tampered))
        await mallory.frame(FrameKind.PACKET, bytes(wire("d-2")))
        kind, body = await mallory.read_frame()
        ack = packets.decode(body)
        assert kind == FrameKind.PACKET and (ack.command, ack.packet_id) == ("Ack", "d-2")
        assert codec.loads(bytes(ack.payload)) == "stored"
    finally:
        mallory.close()

    stats = (await alice.api("packets_stats"))["in"]
    assert stats["dropped"].get("bad_signature") == 1
    assert [d["packet_id"] for d in delivered] == ["d-2"] and delivered[0]["received"] == fragment
    assert delivered[0]["payload_sha256"] == sha256(fragment)
    await await_for(lambda: _empty(alice.home.spool), timeout=5, what="alice's spool emptied")


async def _empty(folder: Path) -> bool:
    return not any(folder.iterdir())
