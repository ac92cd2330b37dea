"""Groups on real nodes: brokers hired through the DHT, one order for every member, failover."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from deploy import node
from common.ids import idurl_to_global_id
from tests.e2e.client import NodeClient
from tests.helpers import wait_for

SEND_TIMEOUT = 90


@dataclass
class Group:
    key_id: str
    creator: NodeClient
    members: list[NodeClient]
    brokers: list[NodeClient]
    outsider: NodeClient | None

    @property
    def everyone(self) -> list[NodeClient]:
        return [self.creator, *self.members]


def _gid(identities: dict[str, dict], client: NodeClient) -> str:
    return identities[client.name]["global_id"]


def _pid(client: NodeClient, program: str) -> int:
    return next(p["pid"] for p in client.ok("process_info")["processes"] if p["name"] == program)


def _history_ids(client: NodeClient, group: str) -> list[str]:
    items = client.ok("message_history", recipient_id=group, message_type="group_message", limit=1000)
    return [item["doc"]["payload"]["message_id"] for item in items]


def _send(client: NodeClient, group: str, data: dict[str, Any]) -> dict[str, Any]:
    status, doc = client.request("POST", "/message/send/group/v1", body={"group_key_id": group, "data": data},
                                 timeout=SEND_TIMEOUT)
    assert status == 200 and doc["status"] == "OK", (status, doc)
    return doc["result"]


def _all_have(group: Group, sent: list[str], timeout: float = 90) -> list[str]:
    """Wait until every member's history holds every sent id; return the one order they all share."""
    def complete() -> bool:
        for client in group.everyone:
            status, doc = client.call("message_history", recipient_id=group.key_id, message_type="group_message",
                                      limit=1000)
            if status != 200:  # a messaging process restarting
                return False
            if not set(sent) <= {item["doc"]["payload"]["message_id"] for item in doc["result"]}:
                return False
        return True

    wait_for(complete, timeout=timeout, interval=0.5, what="every member has every group message")
    orders = [_history_ids(c, group.key_id) for c in group.everyone]
    for order in orders:
        assert len(order) == len(set(order)), "a group message is in history twice"
    assert all(order == orders[0] for order in orders), orders
    return orders[0]


def _enough(records: list[dict]) -> list[dict] | None:
    return records if len(records) >= 2 else None


@pytest.fixture(scope="module")
def group(localnet_nodes, identities) -> Group:
    localnet_nodes.wait_healthy()
    nodes = localnet_nodes.nodes
    creator = nodes[1]
    created = creator.ok("group_create", label="e2e friends")
    key_id = created["group_key_id"]
    assert key_id.startswith("group_") and key_id.endswith("$" + identities[creator.name]["global_id"])
    assert created["label"] == "e2e friends" and created["public"].startswith("ssh-rsa ")
    by_gid = {identities[c.name]["global_id"]: c for c in nodes}
    creator.ok("group_join", group_key_id=key_id)
    # Brokers announce themselves on the DHT's brokers layer; the creator fills its positions as they show up.
    records = wait_for(lambda: _enough(creator.ok("group_info_dht", group_creator_id=_gid(identities, creator))),
                       timeout=180, interval=1, what="two brokers hired")
    brokers = [by_gid[idurl_to_global_id(r["broker_idurl"])] for r in records]
    assert [int(r["position"]) for r in records] == list(range(len(records)))
    others = [c for c in nodes if c is not creator and c not in brokers]
    members, outsider = others[:3], (others[3] if len(others) > 3 else None)
    for member in members:
        shared = creator.ok("group_share", group_key_id=key_id, trusted_user_id=identities[member.name]["global_id"])
        assert shared["group_key_id"] == key_id
    for client in [creator, *members]:
        joined = client.ok("group_join", group_key_id=key_id)
        assert joined["group_key_id"] == key_id
    for client in [creator, *members]:
        wait_for(lambda c=client: c.ok("group_info", group_key_id=key_id)["state"] == "CONNECTED", timeout=60,
                 interval=0.3, what=f"{client.name} in sync")
    return Group(key_id, creator, members, brokers, outsider)


def test_group_messages_reach_every_member_once_in_one_order(group, identities):
    consumers = {c.name: f"e2e-group-{c.name}" for c in group.members}
    for member in group.members:
        member.ok("message_receive", consumer_callback_id=consumers[member.name], direction="all",
                  message_types="group_message", polling_timeout=0)
    sent = []
    for n in range(10):
        sender = group.creator if n % 2 == 0 else group.members[0]
        result = _send(sender, group.key_id, {"n": n, "text": f"hello group {n}"})
        assert result["message_id"] and isinstance(result["sequence_id"], int)
        sent.append(result["message_id"])
    order = _all_have(group, sent)
    assert [m for m in order if m in sent] == sent  # one sender at a time: the queue keeps the sending order
    for member in group.members:
        got: list[dict] = []

        def collect(m: NodeClient = member, into: list[dict] = got) -> bool:
            into.extend(m.ok("message_receive", consumer_callback_id=consumers[m.name], direction="all",
                             message_types="group_message", polling_timeout=1))
            return len([i for i in into if i["message_id"] in sent]) >= len(sent)

        wait_for(collect, timeout=60, interval=0.1, what=f"{member.name} consumer got every message")
        ids = [i["message_id"] for i in got if i["message_id"] in sent]
        assert ids == sent, member.name  # each exactly once, in the queue's order
        item = next(i for i in got if i["message_id"] == sent[0])
        assert item["msg_type"] == "group_message" and item["recipient"] == group.key_id
        assert item["sender"] == f"master${_gid(identities, group.creator)}" and item["data"]["n"] == 0
    doc = group.members[1].ok("message_history", recipient_id=group.key_id)[0]["doc"]
    assert doc["payload"]["msg_type"] == "group_message" and doc["recipient"]["glob_id"] == group.key_id
    assert doc["conversation_id"] == group.key_id
    info = group.members[1].ok("group_info", group_key_id=group.key_id)
    assert info["active"] is True and info["active_broker_id"] and info["last_sequence_id"] >= 9
    # `members` are the consumers of the broker serving the asking member; a member whose first request
    # timed out (a loaded host) is served by the next broker, so the brokers' lists together hold everyone.
    listed = set()
    for client in group.everyone:
        listed.update(client.ok("group_info", group_key_id=group.key_id)["members"])
    assert {_gid(identities, c) for c in group.everyone} <= listed
    # Brokers checked membership proofs with common.rsa_public; nobody's messaging maps `cryptography`.
    for client in [group.creator, *group.members, *group.brokers]:
        maps = client.maps("messaging")
        assert "uvloop" in maps and "cryptography" not in maps, client.name


def test_member_away_gets_what_it_missed_in_order(group):
    stopped, leaver = group.members[2], group.members[1]
    node.supervisor(stopped.home).call_sync("stopProcess", "messaging", True)
    leaver.ok("group_leave", group_key_id=group.key_id)
    assert leaver.ok("group_info", group_key_id=group.key_id)["state"] == "DISCONNECTED"
    try:
        sent = [_send(group.creator, group.key_id, {"missed": n})["message_id"] for n in range(5)]
    finally:
        node.supervisor(stopped.home).call_sync("startProcess", "messaging", True)
    leaver.ok("group_join", group_key_id=group.key_id)
    order = _all_have(group, sent)
    assert [m for m in order if m in sent] == sent


def test_active_broker_killed_nothing_lost_or_doubled(group, identities):
    info = group.creator.ok("group_info", group_key_id=group.key_id)
    active = next(b for b in group.brokers if _gid(identities, b) == info["active_broker_id"])
    pid = _pid(active, "messaging")
    sent = [_send(group.members[0], group.key_id, {"before_kill": n})["message_id"] for n in range(3)]
    os.kill(pid, signal.SIGKILL)
    for n in range(10):
        sender = group.creator if n % 2 else group.members[0]
        sent.append(_send(sender, group.key_id, {"after_kill": n})["message_id"])
    order = _all_have(group, sent, timeout=120)
    assert [m for m in order if m in sent] == sent
    wait_for(lambda: node.healthy(active.home) and _pid(active, "messaging") != pid, timeout=60, interval=0.3,
             what="the killed broker restarted")
    # Back in service, the restarted broker catches up before it serves: still one order, nothing twice.
    more = [_send(group.members[0], group.key_id, {"after_restart": n})["message_id"] for n in range(3)]
    order = _all_have(group, sent + more, timeout=120)
    assert [m for m in order if m in sent + more] == sent + more


async def test_websocket_member_gets_group_messages_pushed(group, identities):
    member = group.members[1]
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(member.ws_url + f"?api_secret={member.secret}") as ws:
            result = await loop.run_in_executor(None, lambda: _send(group.creator, group.key_id, {"pushed": True}))
            while True:
                msg = json.loads((await asyncio.wait_for(ws.receive(), 60)).data)
                if msg["type"] == "stream_message" and msg["payload"]["message_id"] == result["message_id"]:
                    break
    payload = msg["payload"]
    assert payload["data"] == {"pushed": True} and payload["msg_type"] == "group_message"
    assert payload["recipient"] == group.key_id and payload["dir"] == "incoming"


def test_group_reconnect(group):
    member = group.members[2]
    reconnected = member.ok("group_reconnect", group_key_id=group.key_id)
    assert reconnected["group_key_id"] == group.key_id
    wait_for(lambda: member.ok("group_info", group_key_id=group.key_id)["state"] == "CONNECTED", timeout=60,
             interval=0.3, what="reconnected member in sync")
    sent = [_send(group.members[0], group.key_id, {"after_reconnect": True})["message_id"]]
    _all_have(group, sent)


def test_queue_listings(group, identities):
    broker = group.brokers[0]
    queues = [q for q in broker.ok("queues_list") if q["group_key_id"] == group.key_id]
    assert len(queues) == 1 and queues[0]["last_sequence_id"] >= 9 and queues[0]["messages"] >= 10
    consumers = {c["consumer_id"] for b in group.brokers for c in b.ok("queue_consumers_list")
                 if c["group_key_id"] == group.key_id}  # each member at the broker serving it
    assert {_gid(identities, c) for c in group.everyone} <= consumers
    producers = {p["producer_id"] for b in group.brokers for p in b.ok("queue_producers_list")
                 if p["group_key_id"] == group.key_id}
    assert {_gid(identities, group.creator), _gid(identities, group.members[0])} <= producers
    peddlers = [p for p in broker.ok("queue_peddlers_list") if p["group_key_id"] == group.key_id]
    assert peddlers and peddlers[0]["position"] in (0, 1, 2)
    keepers = group.creator.ok("queue_keepers_list")
    assert keepers and {b["broker_id"] for b in keepers[0]["brokers"]} == {_gid(identities, b) for b in group.brokers}
    listed = {g["group_key_id"]: g for g in group.members[0].ok("groups_list")}
    assert listed[group.key_id]["label"] == "e2e friends" and listed[group.key_id]["active"] is True
    assert group.creator.ok("queues_list") == [] or all(q["group_key_id"] != group.key_id
                                                         for q in group.creator.ok("queues_list"))


def test_bad_inputs(group, identities):
    member = group.members[0]
    unknown = "group_00000000000000000000000000000000$" + _gid(identities, group.creator)
    status, doc = member.call("group_join", group_key_id=unknown)
    assert status == 404 and doc["reason"] == "group_not_found"
    status, doc = member.call("message_send_group", group_key_id=unknown, data={"x": 1})
    assert status == 404 and doc["reason"] == "group_not_found"
    status, doc = member.call("group_info", group_key_id="not a group")
    assert status == 400
    status, doc = member.call("message_send_group", group_key_id=group.key_id, data="text")
    assert status == 400
    status, doc = member.call("message_send_group", group_key_id=group.key_id, data={"big": "x" * 300_000})
    assert status == 413
    if group.outsider is not None:
        # Holding the key without joining: 409.
        group.creator.ok("group_share", group_key_id=group.key_id,
                         trusted_user_id=_gid(identities, group.outsider))
        status, doc = group.outsider.call("message_send_group", group_key_id=group.key_id, data={"x": 1})
        assert status == 409 and doc["reason"] == "group_not_joined"
        status, doc = group.outsider.call("group_leave", group_key_id=group.key_id)
        assert status == 409
        group.outsider.ok("group_leave", group_key_id=group.key_id, erase_key=True)
        status, doc = group.outsider.call("group_info", group_key_id=group.key_id)
        assert status == 404
