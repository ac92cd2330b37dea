"""The flows the reference engine's own regression suite runs, as its clients see them.

What those clients wait for (`regress/keywords.py` of the reference): a state in `share_info` /
`group_info`, `reliable` in every version of `files_list`, an empty `packets_list`, the group in
`message_conversation`, `queue_stream_list`, and on separate hosts two different STUN addresses.
Each wait here is a poll with a deadline, through raw REST requests as the reference helpers send.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Iterator

import pytest

from dataclasses import dataclass

from common.ids import idurl_to_global_id
from deploy import localnet, netns, node
from tests.e2e.client import NodeClient
from tests.e2e.conftest import PORT_OFFSET
from tests.helpers import wait_for

NETNS_OFFSET = PORT_OFFSET + 1000
"""A subnet of its own (`localnet.subnet_for`), beside test_netns.py's +3000 and test_nat.py's +4000."""


def _get(client: NodeClient, path: str) -> tuple[int, dict[str, Any]]:
    return client.request("GET", "/" + path)


def _send(client: NodeClient, verb: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return client.request(verb, "/" + path, body=body)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _ok(answer: tuple[int, dict[str, Any]]) -> Any:
    status, doc = answer
    assert status == 200 and doc["status"] == "OK", doc
    return doc.get("result")


# --- STUN across hosts -------------------------------------------------------------------------

@pytest.fixture()
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeClient]]:
    if netns.available():
        pytest.skip(netns.available())
    root = tmp_path_factory.mktemp("refnetns")
    try:
        doc = localnet.up(root, 3, NETNS_OFFSET, identities=True, timeout=120, namespaces=True)
        yield [NodeClient.from_listing(item) for item in doc["nodes"]]
    finally:
        localnet.down(root)


def _stun(client: NodeClient) -> dict[str, Any] | None:
    status, doc = _get(client, "network/stun/v1")
    return doc["result"] if status == 200 and doc["status"] == "OK" else None


def test_network_stun_gives_each_host_its_own_address(hosts):
    """The reference's scenario 2: two customers' STUN answers succeed and differ."""
    answers = [wait_for(lambda c=c: _stun(c), timeout=60, interval=1, what=f"{c.name} STUN answer")
               for c in hosts[1:]]
    for client, answer in zip(hosts[1:], answers, strict=True):
        assert answer["result"] == "stun-success", answer
        assert answer["ip"] == client.address, (client.name, answer)
    assert answers[0]["ip"] != answers[1]["ip"]


# --- groups ------------------------------------------------------------------------------------

@dataclass
class Group:
    key_id: str
    creator: NodeClient
    member: NodeClient
    brokers: list[NodeClient]
    before_join: dict[str, Any]
    """`group_info` on the creator, and each node's `message_conversation`, before anyone joined."""


def _waiting_packets(client: NodeClient) -> list[dict[str, Any]]:
    """`packets_list` as the reference's `packet_list_v1(wait_all_finish=True)` reads it."""
    return [p for p in _ok(_get(client, "packet/list/v1")) if "idle_ping:" not in p.get("packet_id", "")]


@pytest.fixture(scope="module")
def group(localnet_nodes, identities) -> Group:
    """A group on nodes 1 (creator) and a member that is none of its two brokers."""
    localnet_nodes.wait_healthy()
    nodes = localnet_nodes.nodes
    creator = nodes[1]
    key_id = _ok(_send(creator, "POST", "group/create/v1", {"key_size": 1024, "label": "reference flows"}))[
        "group_key_id"]
    by_gid = {identities[c.name]["global_id"]: c for c in nodes}
    creator_id = identities[creator.name]["global_id"]
    before: dict[str, Any] = {"info": _group_info(creator, key_id), creator.name: _conversations(creator)}
    # Joining hires the brokers (as the reference's group_join does).
    _ok(_send(creator, "POST", "group/join/v1", {"group_key_id": key_id}))
    records = wait_for(lambda: len(r := _ok(_get(creator, f"group/info/dht/v1?group_creator_id={_q(creator_id)}")))
                       >= 2 and r, timeout=180, interval=1, what="two brokers hired")
    brokers = [by_gid[idurl_to_global_id(r["broker_idurl"])] for r in records]
    member = next(c for c in nodes[2:] if c not in brokers)
    _ok(_send(creator, "PUT", "group/share/v1",
              {"group_key_id": key_id, "trusted_id": identities[member.name]["global_id"]}))
    before[member.name] = _conversations(member)
    _ok(_send(member, "POST", "group/join/v1", {"group_key_id": key_id}))
    return Group(key_id, creator, member, brokers, before)


def _conversations(client: NodeClient) -> list[dict[str, Any]]:
    return list(_ok(_get(client, "message/conversation/v1?message_types=private_message,group_message")))


def _group_info(client: NodeClient, key_id: str) -> dict[str, Any]:
    return dict(_ok(_get(client, f"group/info/v1?group_key_id={_q(key_id)}")))


def test_group_info_reports_the_participant_states_and_fields(group, identities):
    """DISCONNECTED before joining, then CONNECTED (what clients wait for) with the active queue named."""
    creator_id = identities[group.creator.name]["global_id"]
    created = group.before_join["info"]
    assert created["state"] == "DISCONNECTED" and created["last_sequence_id"] == -1, created
    assert created["label"] == "reference flows" and created["creator"] == creator_id
    by_gid = {identities[b.name]["global_id"]: b for b in group.brokers}
    for client in (group.creator, group.member):
        info = wait_for(lambda c=client: (i := _group_info(c, group.key_id))["state"] == "CONNECTED" and i,
                        timeout=60, interval=0.5, what=f"{client.name} CONNECTED")
        assert info["participant_id"] == identities[client.name]["global_id"] and info["creator"] == creator_id
        assert info["active"] is True and info["last_sequence_id"] == -1, info
        assert info["active_supplier_id"] in by_gid and isinstance(info["active_supplier_pos"], int), info
        assert info["active_queue_id"] == f"{group.key_id.split('$', 1)[0]}&{creator_id}&{info['active_supplier_id']}"
        broker = by_gid[info["active_supplier_id"]]
        assert info["active_queue_id"] in {q["queue_id"] for q in _ok(_get(broker, "queue/list/v1"))}
        assert (info["sequence_head"], info["sequence_tail"], info["sequence_count"]) == (None, None, 0), info
    sent = _ok(_send(group.creator, "POST", "message/send/group/v1",
                     {"group_key_id": group.key_id, "data": {"text": "hello reference"}}))
    info = wait_for(lambda: (i := _group_info(group.member, group.key_id))["sequence_count"] == 1 and i,
                    timeout=60, interval=0.5, what="the member consumed the message")
    assert info["last_sequence_id"] == info["sequence_head"] == info["sequence_tail"] == sent["sequence_id"]


def test_group_conversation_opens_with_the_key(group):
    """The creator's and the member's (empty) group conversation is listed as soon as each holds the key."""
    for client in (group.creator, group.member):
        listed = [c for c in group.before_join[client.name] if c["key_id"] == group.key_id]
        assert len(listed) == 1 and listed[0]["type"] == "group_message" and listed[0]["messages"] == 0, listed
    private_only = _ok(_get(group.member, "message/conversation/v1?message_types=private_message"))
    assert group.key_id not in {c["key_id"] for c in private_only}


def test_packets_list_skips_a_members_standing_poll(group):
    """Once members are idle, every packet left is a long poll marked `idle_ping:` (the reference's mark)."""
    for client in (group.creator, group.member):
        wait_for(lambda c=client: any("idle_ping:" in p.get("packet_id", "")
                                      for p in _ok(_get(c, "packet/list/v1"))),
                 timeout=60, interval=0.3, what=f"{client.name}'s long poll to a broker in flight")
    for client in (group.creator, group.member, *group.brokers):
        wait_for(lambda c=client: not _waiting_packets(c), timeout=60, interval=1,
                 what=f"{client.name} has no packets in flight but idle polls")


def test_queue_stream_list_shows_the_group_stream_on_its_brokers(group, identities):
    """As the reference's scenario 12: the member's active queue is in `queue/stream/list/v1` of its
    active broker, with the creator and the member among its consumers."""
    creator_id, member_id = (identities[c.name]["global_id"] for c in (group.creator, group.member))
    by_gid = {identities[b.name]["global_id"]: b for b in group.brokers}
    info = wait_for(lambda: (i := _group_info(group.member, group.key_id))["state"] == "CONNECTED" and i,
                    timeout=60, interval=0.5, what="the member CONNECTED")
    active = by_gid[info["active_supplier_id"]]

    def stream(broker: NodeClient, queue_id: str, consumers: set[str]) -> dict[str, Any] | None:
        for item in _ok(_get(broker, "queue/stream/list/v1")):
            if item["queue_id"] == queue_id and consumers <= set(item["consumers"]):
                return dict(item)
        return None

    found = wait_for(lambda: stream(active, info["active_queue_id"], {creator_id, member_id}), timeout=60,
                     interval=0.5, what=f"the stream with both consumers on {active.name}")
    assert found["active"] is True and isinstance(found["sequence_id"], int), found
    assert info["active_queue_id"] in {q["queue_id"] for q in _ok(_get(active, "queue/list/v1"))}


# --- shares --------------------------------------------------------------------------------------

def _share_info(client: NodeClient, key_id: str) -> dict[str, Any]:
    return dict(_ok(_get(client, f"share/info/v1?key_id={_q(key_id)}")))


def _wait_share(client: NodeClient, key_id: str, state: str, suppliers: int) -> dict[str, Any]:
    """The reference's `share_info_v1(wait_state=..., wait_suppliers=...)`."""
    return wait_for(lambda: (i := _share_info(client, key_id))["state"] == state and len(i["suppliers"]) == suppliers
                    and i, timeout=90, interval=1, what=f"share {state} with {suppliers} suppliers on {client.name}")


def _reliable_versions(client: NodeClient, remote_path: str, reliable: str) -> list[dict[str, Any]]:
    """The versions of `remote_path` in `file/list/all/v1` when every one is `reliable`, else []."""
    for item in _ok(_get(client, "file/list/all/v1")):
        if item["remote_path"] == remote_path and item["versions"]:
            versions = list(item["versions"])
            return versions if all(v["reliable"] == reliable for v in versions) else []
    return []


def test_share_is_connected_at_its_owner_and_at_a_grantee(localnet_nodes, identities, tmp_path):
    """The reference's scenario: create, CONNECTED with the suppliers, upload, grant; the grantee's
    share CONNECTED with the owner's suppliers without opening it; DISCONNECTED while the suppliers
    are unreachable; closed, it is CLOSED."""
    owner, friend = localnet_nodes.nodes[2], localnet_nodes.nodes[3]
    by_gid = {identities[c.name]["global_id"]: c for c in localnet_nodes.nodes}
    # Suppliers away for a minute below stay hired (unreachable, not replaced).
    _ok(_send(owner, "POST", "config/set/v1", {"key": "services/employer/replace-offline-after", "value": 3600}))
    _ok(_send(owner, "POST", "config/set/v1", {"key": "services/customer/suppliers-number", "value": 2}))
    suppliers = wait_for(lambda: len(s := [i for i in _ok(_get(owner, "supplier/list/v1"))
                                           if i["supplier_state"] == "CONNECTED"]) == 2 and s,
                         timeout=120, interval=1, what="two suppliers CONNECTED")
    key_id = _ok(_send(owner, "POST", "share/create/v1", {"key_size": 1024}))["key_id"]
    info = _wait_share(owner, key_id, "CONNECTED", 2)
    assert sorted(info["suppliers"]) == sorted(s["global_id"] for s in suppliers), info
    source = tmp_path / "cat.txt"
    source.write_bytes(b"reference cat " * 100)
    status, doc = owner.call("file_upload_start", local_path=str(source), remote_path=f"{key_id}:cat.txt",
                             wait_result=True)
    assert status == 200, doc
    # The reference's file_list_all_v1: every version of every file "100%" reliable.
    listed = wait_for(lambda: _reliable_versions(owner, f"{key_id}:cat.txt", "100%"), timeout=90, interval=1,
                      what="cat.txt 100% reliable in file/list/all/v1")
    for version in listed:
        assert version["delivered"] == "100%" and len(version["suppliers"]) == 2, version
        # As the reference's file_info: each supplier's fragments and its share of them all.
        assert sum(s["fragments"] for s in version["suppliers"]) == version["fragments"] > 0, version
        assert [s["stored"] for s in version["suppliers"]] == ["50%", "50%"], version
    _ok(_send(owner, "PUT", "share/grant/v1",
              {"trusted_global_id": identities[friend.name]["global_id"], "key_id": key_id, "timeout": 60}))
    assert key_id in {k["key_id"] for k in _ok(_get(friend, "key/list/v1"))}
    granted = _wait_share(friend, key_id, "CONNECTED", 2)
    assert sorted(granted["suppliers"]) == sorted(info["suppliers"]) and granted["mine"] is False, granted
    # The state is a check, not a count: with both suppliers unreachable the share is DISCONNECTED at
    # the next look after RECHECK (30 s), and CONNECTED again once they answer.
    holders = [by_gid[s["global_id"]] for s in suppliers]
    for holder in holders:
        node.supervisor(holder.home).call_sync("stopProcess", "transport", True)
    try:
        wait_for(lambda: _share_info(owner, key_id)["state"] == "DISCONNECTED", timeout=120, interval=1,
                 what="share DISCONNECTED with its suppliers away")
    finally:
        for holder in holders:
            node.supervisor(holder.home).call_sync("startProcess", "transport", True)
            node.wait_healthy(holder.home, 60)
    _wait_share(owner, key_id, "CONNECTED", 2)
    _ok(_send(owner, "DELETE", "share/close/v1", {"key_id": key_id}))
    assert _share_info(owner, key_id)["state"] == "CLOSED"
