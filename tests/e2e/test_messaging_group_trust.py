"""Groups on real nodes where members are their own brokers, and one broker turns hostile.

Four nodes (BITDUST_TEST_NODES=4; with 3 the chain test is skipped): node-0 switches its broker
service off and the creator (node-2) wants one broker, so it hires another node, which is made a
member too and must reach the broker role it holds without the network (the transport refuses to
connect a node to itself; before, that member never joined and could not send). Then that
broker forges a message in node-0's name straight into its queue (signing the chain link with
its own key, as a hostile broker can): every member drops it, counts it and names the broker.
The creator's `queue_keepers_list` reports the broker whose messaging process is stopped as it
found it. Last, with a second creator (node-3) and two brokers, the active broker hides an entry
from a member that was away: the member sees the gap, reports the broker and gets the entry, in
order, from the other broker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Iterator

import pytest

from common import crypto
from deploy import node
from services.messaging import envelope
from services.messaging.chain import Link
from services.messaging.group_endpoints import BROKER_OPTION, POSITIONS_OPTION
from services.messaging.queue_store import QueueStore
from tests.e2e.client import NodeClient
from tests.helpers import wait_for
from tests.unit.sealing import seal

SEND_TIMEOUT = 90


@dataclass
class Group:
    key_id: str
    creator: NodeClient
    member: NodeClient  # node-2: a member and the broker at position 0
    plain: NodeClient  # node-0: a member only
    public: str

    @property
    def everyone(self) -> list[NodeClient]:
        return [self.creator, self.member, self.plain]


def _history_ids(client: NodeClient, group: str) -> list[str]:
    items = client.ok("message_history", recipient_id=group, message_type="group_message", limit=1000)
    return [item["doc"]["payload"]["message_id"] for item in items]


def _in_sync(client: NodeClient, group: str) -> bool:
    return bool(client.ok("group_info", group_key_id=group)["active"])  # joined and following its queue


def _send(client: NodeClient, group: str, data: dict) -> dict:
    status, doc = client.request("POST", "/message/send/group/v1", body={"group_key_id": group, "data": data},
                                 timeout=SEND_TIMEOUT)
    assert status == 200 and doc["status"] == "OK", (client.name, status, doc)
    return doc["result"]


def _all_have(group: Group, sent: list[str], timeout: float = 90) -> list[str]:
    def complete() -> bool:
        for client in group.everyone:
            status, doc = client.call("message_history", recipient_id=group.key_id, message_type="group_message",
                                      limit=1000)
            if status != 200 or not set(sent) <= {i["doc"]["payload"]["message_id"] for i in doc["result"]}:
                return False
        return True

    wait_for(complete, timeout=timeout, interval=0.5, what="every member has every group message")
    orders = [_history_ids(c, group.key_id) for c in group.everyone]
    assert all(order == orders[0] for order in orders), orders
    return orders[0]


def _hired(creator: NodeClient, identities: dict, count: int) -> list[NodeClient]:
    """The nodes `creator` hired as brokers, by position, once `count` are published."""
    gid = identities[creator.name]["global_id"]

    def published() -> list[dict] | None:
        found = creator.ok("group_info_dht", group_creator_id=gid)
        return found if len(found) >= count else None

    records = wait_for(published, timeout=180, interval=1, what=f"{count} brokers hired by {creator.name}")
    assert [int(r["position"]) for r in records] == list(range(count)), records
    by_idurl = {identities[name]["idurl"]: name for name in identities}
    return [next(c for c in _NODES if c.name == by_idurl[r["broker_idurl"]]) for r in records]


_NODES: list[NodeClient] = []


@pytest.fixture(scope="module")
def group(localnet_nodes, identities) -> Iterator[Group]:
    localnet_nodes.wait_healthy()
    _NODES[:] = localnet_nodes.nodes
    plain, creator = localnet_nodes.nodes[0], localnet_nodes.nodes[2]
    plain.ok("config_set", key=BROKER_OPTION, value=False)
    creator.ok("config_set", key=POSITIONS_OPTION, value=1)
    try:
        created = creator.ok("group_create", label="self brokers")
        key_id = created["group_key_id"]
        creator.ok("group_join", group_key_id=key_id)
        member, = _hired(creator, identities, 1)
        assert member not in (plain, creator)  # node-0 refuses, the creator does not hire itself
        for client in (member, plain):
            creator.ok("group_share", group_key_id=key_id, trusted_user_id=identities[client.name]["global_id"])
            client.ok("group_join", group_key_id=key_id)
        for client in (creator, member, plain):
            wait_for(partial(_in_sync, client, key_id), timeout=60, interval=0.3, what=f"{client.name} in sync")
        yield Group(key_id, creator, member, plain, created["public"])
    finally:
        plain.ok("config_set", key=BROKER_OPTION, value=True)
        creator.ok("config_set", key=POSITIONS_OPTION, value=2)


def test_members_that_are_their_own_brokers_join_and_deliver(group, identities):
    for client in group.everyone:
        info = client.ok("group_info", group_key_id=group.key_id)
        assert info["active"] is True, (client.name, info)
    # The member reads its own queue (position 0) without the network.
    info = group.member.ok("group_info", group_key_id=group.key_id)
    assert info["active_broker_position"] == 0 and info["active_broker_idurl"] == identities[group.member.name]["idurl"]
    sent = [_send(sender, group.key_id, {"n": n})["message_id"]
            for n, sender in enumerate([group.member, group.creator, group.plain, group.member])]
    order = _all_have(group, sent)
    assert [m for m in order if m in sent] == sent
    queues = [q for q in group.member.ok("queues_list") if q["group_key_id"] == group.key_id]
    assert queues and queues[0]["last_sequence_id"] >= 3
    producers = {p["producer_id"] for p in group.member.ok("queue_producers_list")}
    assert identities[group.member.name]["global_id"] in producers  # it produced to itself


def _forge_in_queue(group: Group, identities: dict) -> str:
    """The broker turned hostile: a message in node-0's name, numbered and linked in its own queue."""
    broker = group.member
    me = identities[broker.name]["idurl"]
    master = crypto.load_private_key((broker.home.state_dir("identity") / "keys" / "master.pem").read_bytes())
    header = envelope.Header("group_message", envelope.new_message_id("group"), identities[group.plain.name]["idurl"],
                             group.key_id, time.time())
    raw = seal(header, {"forged": True}, group.public)
    sealed = envelope.parse(raw)
    raw["signature"] = crypto.b64(crypto.sign(master, sealed.signed_bytes()))  # signed, but not by node-0
    store = QueueStore(broker.home.state_dir("messaging") / "queues.sqlite")
    try:
        last = store.last_seq(group.key_id)
        before = store.get(group.key_id, last)
        assert before is not None and before[0].link
        link = Link(group.key_id, last + 1, header.message_id, header.sender, envelope.parse(raw).digest(),
                    Link.from_wire(before[0].link).hash(), me)
        link = replace(link, signature=crypto.b64(crypto.sign(master, link.signed_bytes())))
        entry = store.append(group.key_id, header.message_id, header.sender, raw, header.time, link.wire())
        store.commit(group.key_id, entry.seq)
    finally:
        store.close()
    return header.message_id


def test_a_broker_forging_a_members_message_is_dropped_by_every_member(group, identities):
    forged = _forge_in_queue(group, identities)
    # The members' next fetches from node-2 bring it; a genuine message after it still arrives.
    after = _send(group.plain, group.key_id, {"after_forgery": True})["message_id"]
    _all_have(group, [after])
    hostile = identities[group.member.name]["global_id"]
    for client in group.everyone:
        assert forged not in _history_ids(client, group.key_id), client.name
        def counted(c: NodeClient = client) -> dict | None:
            info = c.ok("group_info", group_key_id=group.key_id)
            return info if info["dropped"] else None

        info = wait_for(counted, timeout=30, interval=0.5, what=f"{client.name} counted the forgery")
        assert info["dropped"].get("bad_signature") == 1, (client.name, info["dropped"])
        faults = {f["broker_id"]: f["faults"] for f in info["faulty_brokers"]}
        assert faults.get(hostile, {}).get("forged_message") == 1, (client.name, faults)


def test_keepers_report_a_stopped_broker_as_checked(group, identities):
    keepers = group.creator.ok("queue_keepers_list")
    assert keepers and keepers[0]["state"] == "CONNECTED", keepers
    states = {b["broker_id"]: b for b in keepers[0]["brokers"]}
    stopped = identities[group.member.name]["global_id"]
    assert states[stopped]["state"] == "CONNECTED" and states[stopped]["last_answer"]
    supervisor = node.supervisor(group.member.home)
    supervisor.call_sync("stopProcess", "messaging", True)
    try:
        def not_connected() -> dict | None:
            found = group.creator.ok("queue_keepers_list")[0]
            broker = next(b for b in found["brokers"] if b["broker_id"] == stopped)
            return found if broker["state"] != "CONNECTED" else None

        found = wait_for(not_connected, timeout=60, interval=1, what="the stopped broker reported as not connected")
        assert found["state"] == "NO_BROKER_ANSWERS", found
        broker = next(b for b in found["brokers"] if b["broker_id"] == stopped)
        assert broker["state"] in ("OFFLINE", "REFUSED") and broker["last_error"], broker
    finally:
        supervisor.call_sync("startProcess", "messaging", True)
    wait_for(lambda: node.healthy(group.member.home), timeout=60, interval=0.5, what="node-2 healthy again")
    wait_for(lambda: group.creator.ok("queue_keepers_list")[0]["state"] == "CONNECTED", timeout=90, interval=1,
             what="every broker answers again")


@pytest.fixture(scope="module")
def chain_group(group, localnet_nodes, identities) -> tuple[str, NodeClient, NodeClient, list[NodeClient]]:
    """(group key id, creator node-3, member node-0, brokers by position): two brokers, neither a member."""
    if len(localnet_nodes.nodes) < 4:
        pytest.skip("needs BITDUST_TEST_NODES >= 4")
    creator, plain = localnet_nodes.nodes[3], localnet_nodes.nodes[0]
    key_id = creator.ok("group_create", label="chained")["group_key_id"]
    creator.ok("group_join", group_key_id=key_id)
    brokers = _hired(creator, identities, 2)
    creator.ok("group_share", group_key_id=key_id, trusted_user_id=identities[plain.name]["global_id"])
    plain.ok("group_join", group_key_id=key_id)
    for client in (creator, plain):
        wait_for(partial(_in_sync, client, key_id), timeout=60, interval=0.3, what=f"{client.name} in sync")
    return key_id, creator, plain, brokers


def test_a_broker_hiding_an_entry_is_reported_and_the_other_serves_it(chain_group, identities):
    key_id, creator, member, brokers = chain_group
    hostile = brokers[0]
    supervisor = node.supervisor(member.home)
    supervisor.call_sync("stopProcess", "messaging", True)
    try:
        sent = [_send(creator, key_id, {"chained": n})["message_id"] for n in range(3)]
        store = QueueStore(hostile.home.state_dir("messaging") / "queues.sqlite")
        try:  # the active broker hides the middle message from whoever fetches it now
            assert store.db.execute("DELETE FROM entries WHERE group_key_id=? AND message_id=?",
                                    (key_id, sent[1])).rowcount == 1
        finally:
            store.close()
    finally:
        supervisor.call_sync("startProcess", "messaging", True)
    def got_all() -> bool:
        status, doc = member.call("message_history", recipient_id=key_id, message_type="group_message", limit=1000)
        return status == 200 and set(sent) <= {i["doc"]["payload"]["message_id"] for i in doc["result"]}

    wait_for(got_all, timeout=90, interval=0.5, what="the member got every message (its messaging restarted)")
    order = _history_ids(member, key_id)
    assert [m for m in order if m in sent] == sent
    info = member.ok("group_info", group_key_id=key_id)
    faults = {f["broker_id"]: f["faults"] for f in info["faulty_brokers"]}
    assert faults == {identities[hostile.name]["global_id"]: {"gap": 1}}, faults
    assert info["active_broker_idurl"] == identities[brokers[1].name]["idurl"]
    events = (member.home.logs / "event.log").read_text()
    assert "group-broker-faulty" in events and identities[hostile.name]["global_id"] in events
