"""Two nodes on their own buses: pings, requests to inbox consumers, replies, counters, presence."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from common import codec, spool, subjects
from common.errors import NodeError
from tests.helpers import await_for
from tests.service.test_transport_harness import Directory, Node, transport_node


@pytest.fixture
async def pair(tmp_path):
    directory: Directory = {}
    async with transport_node(tmp_path, "alice", directory) as alice, transport_node(tmp_path, "bob", directory) as bob:
        yield alice, bob


async def test_ping_both_ways_and_status(pair: tuple[Node, Node]):
    alice, bob = pair
    with pytest.raises(NodeError) as unknown:
        await alice.api("user_status", user_id="nobody@127.0.0.1_8084")
    assert unknown.value.status == 404
    before = await alice.api("user_status", user_id=bob.doc["global_id"])
    assert before == {"idurl": bob.idurl, "global_id": "bob@127.0.0.1_8084", "contact_state": "OFFLINE"}

    doc = await alice.client.request_raw("api.transport.user_ping", codec.dumps({"user_id": bob.doc["global_id"]}))
    assert doc["result"]["command"] == "Ack" and doc["result"]["contact_state"] == "CONNECTED"
    assert any("Ack(" in line for line in doc["message"])
    pong = await bob.api("user_ping", user_id=f"master${alice.doc['global_id']}", timeout=5)
    assert pong["command"] == "Ack"

    assert (await alice.api("user_status", user_id=bob.idurl))["contact_state"] == "CONNECTED"
    assert (await bob.api("user_status_check", user_id=alice.idurl))["contact_state"] == "CONNECTED"

    # one connection per peer, reused both ways
    links = await alice.api("connections_list", protocols="tcp")
    assert [link["idurl"] for link in links] == [bob.idurl]
    assert links[0]["state"] == "CONNECTED" and links[0]["bytes_sent"] > 0 and links[0]["bytes_received"] > 0
    assert await alice.api("connections_list", protocols=["proxy"]) == []

    stats = await alice.api("packets_stats")
    assert stats["out"]["commands"] == {"Identity": 1, "Ack": 1}
    assert stats["in"]["commands"] == {"Ack": 1, "Identity": 1}
    assert stats["out"]["peers"][bob.idurl] == stats["out"]["total_bytes"] > 0
    assert stats["in"]["failed_packets"] == 0 and stats["in"]["unknown_packets"] == 0
    status = await alice.api("network_status", tcp=True)
    assert status["network_connector_state"] == "CONNECTED" and status["idurl"] == alice.idurl
    assert status["identity_contacts"] == [f"tcp://127.0.0.1:{alice.port}"]
    assert status["tcp"]["connections"] == 1
    assert (await alice.api("network_connected", wait_timeout=1))["service_network"] == "started"


async def test_requests_reach_inbox_consumers_and_replies_come_back(pair: tuple[Node, Node]):
    alice, bob = pair
    seen: list[dict[str, Any]] = []

    async def on_message(msg: Any) -> None:
        body = codec.loads(msg.data)
        seen.append(body)
        if body.get("binary"):  # a binary packet: its payload is a spool file, answered with another one
            data = Path(body["payload_path"]).read_bytes()
            answer = spool.write_new(bob.home.spool, data[::-1], prefix="out")
            await msg.respond(codec.dumps({"command": "Ack", "payload_path": str(answer),
                                           "payload_path_temporary": True}))
            return
        await msg.respond(codec.dumps({"command": "Ack", "payload": {"echo": body["payload"]}}))

    await bob.client.nc.subscribe(subjects.inbox("Message"), queue="messaging", cb=on_message)
    reply = await alice.send(bob, "Message", payload={"text": "hi"}, packet_id="m-1")
    assert reply == {"command": "Ack", "packet_id": "m-1", "payload": {"echo": {"text": "hi"}}}
    assert seen[0]["creator_idurl"] == alice.idurl and seen[0]["owner_idurl"] == alice.idurl
    assert seen[0]["packet_id"] == "m-1" and seen[0]["command"] == "Message"

    blob = bytes(range(256)) * 8192  # 2 MiB, travels raw between the nodes
    reply = await alice.send(bob, "Message", payload_b64=base64.b64encode(blob).decode())
    assert base64.b64decode(reply["payload_b64"]) == blob[::-1]
    assert seen[-1]["binary"] is True and seen[-1]["creator_idurl"] == alice.idurl and "payload" not in seen[-1]
    assert seen[-1]["payload_size"] == len(blob) and not Path(seen[-1]["payload_path"]).exists()
    assert list(bob.home.spool.iterdir()) == []  # both the delivered file and the temporary reply are gone
    # The same without base64 on alice's bus; bob's consumer answers through the spool as before.
    meta, body = await alice.client.request_binary(
        subjects.internal("transport", "send_raw"), {"remote_idurl": bob.idurl, "command": "Message"}, blob,
        timeout=30)
    assert meta is not None and meta["command"] == "Ack" and meta["binary"] is True and body == blob[::-1]
    with pytest.raises(NodeError) as refused:
        await alice.client.request_binary(subjects.internal("transport", "send_raw"),
                                          {"remote_idurl": bob.idurl, "command": "Nope"}, b"x")
    assert (refused.value.status, refused.value.reason) == (400, "invalid_command")

    nobody = await alice.send(bob, "Data", payload={"x": 1})
    assert nobody["command"] == "Fail" and nobody["payload"] == "no handler"

    results = await asyncio.gather(*(alice.send(bob, "Message", payload=i) for i in range(20)))
    assert sorted(r["payload"]["echo"] for r in results) == list(range(20))

    with pytest.raises(NodeError) as bad:
        await alice.send(bob, "NoSuchCommand", payload=1)
    assert bad.value.status == 400
    with pytest.raises(NodeError) as unknown:
        await alice.send("http://127.0.0.1:8084/ghost.xml", "Message", payload=1)
    assert unknown.value.status == 404


async def test_stopped_peer_goes_offline_and_comes_back(pair: tuple[Node, Node]):
    alice, bob = pair
    events: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []

    async def on_event(msg: Any) -> None:
        events.append(codec.loads(msg.data))

    async def on_model(msg: Any) -> None:
        models.append(codec.loads(msg.data))

    await alice.client.nc.subscribe(subjects.event("node-connected"), cb=on_event)
    await alice.client.nc.subscribe(subjects.event("node-disconnected"), cb=on_event)
    await alice.client.nc.subscribe(subjects.model("online_status"), cb=on_model)
    await alice.client.nc.flush()
    await alice.api("user_ping", user_id=bob.idurl)

    async def state() -> str:
        return str((await alice.api("user_status", user_id=bob.idurl))["contact_state"])

    assert await state() == "CONNECTED"
    await bob.stop_transport()
    await await_for(lambda: _equals(state, "OFFLINE"), timeout=10, what="bob offline")
    with pytest.raises(NodeError) as offline:
        await alice.send(bob, "Message", payload=1, timeout=3)
    assert offline.value.status in (503, 504)

    await bob.start_transport()
    await await_for(lambda: _equals(state, "CONNECTED"), timeout=15, what="bob back online")
    assert (await alice.api("user_ping", user_id=bob.idurl, timeout=5))["command"] == "Ack"

    await await_for(lambda: _has(events, 3), timeout=5, what="presence events")
    assert [e["event_id"] for e in events[:3]] == ["node-connected", "node-disconnected", "node-connected"]
    assert events[1]["data"]["idurl"] == bob.idurl and events[1]["data"]["new_state"] == "OFFLINE"
    assert any(m["id"] == bob.idurl and m["data"]["state"] == "OFFLINE" for m in models)


async def _equals(probe: Any, expected: str) -> bool:
    return await probe() == expected


async def _has(items: list[Any], count: int) -> bool:
    return len(items) >= count
