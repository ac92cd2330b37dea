"""Private messages, history, conversations, consumers, store and forward and friends, on real nodes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import uuid
from typing import Any

import aiohttp
import pytest

from deploy import node
from tests.e2e.client import NodeClient
from tests.helpers import wait_for

POLL = 20


def _stop_program(client: NodeClient, program: str) -> None:
    node.supervisor(client.home).call_sync("stopProcess", program, True)


def _start_program(client: NodeClient, program: str) -> None:
    node.supervisor(client.home).call_sync("startProcess", program, True)


def _gid(identities: dict[str, dict], client: NodeClient) -> str:
    return identities[client.name]["global_id"]


def _history(client: NodeClient, other: str) -> list[dict[str, Any]]:
    return [item["doc"] for item in client.ok("message_history", recipient_id=other)]


def _send_consumed(sender: NodeClient, receiver: NodeClient, recipient_id: str, data: dict,
                   pool: concurrent.futures.Executor) -> tuple[dict, list[dict]]:
    """Send while the receiver long-polls; retry until a send finds the poll waiting (consumed)."""
    consumer = f"e2e-{receiver.name}"
    receiver.ok("message_receive", consumer_callback_id=consumer, polling_timeout=0)  # registers it
    for attempt in range(5):
        poll = pool.submit(receiver.ok, "message_receive", consumer_callback_id=consumer, polling_timeout=POLL)
        result = sender.ok("message_send", recipient_id=recipient_id, data=dict(data, attempt=attempt))
        received = poll.result(timeout=POLL + 10)
        assert result["delivered"] is True and result["state"] == "delivered"
        assert [m["message_id"] for m in received] == [result["message_id"]]
        if result["consumed"]:
            return result, received
    raise AssertionError("no send found the consumer waiting")


def test_private_messages_between_three_nodes(net, identities):
    nodes = net.nodes[1:4]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for sender in nodes:
            for receiver in nodes:
                if sender is receiver:
                    continue
                text = f"hello from {sender.name} to {receiver.name}"
                result, received = _send_consumed(sender, receiver, _gid(identities, receiver), {"message": text},
                                                  pool)
                item = received[0]
                assert item["data"]["message"] == text and item["dir"] == "incoming"
                assert item["sender"] == f"master${_gid(identities, sender)}"
                assert item["recipient"] == f"master${_gid(identities, receiver)}"
                # In history on both sides, once, with the reference's fields.
                out = [d for d in _history(sender, _gid(identities, receiver))
                       if d["payload"]["message_id"] == result["message_id"]]
                came = [d for d in _history(receiver, _gid(identities, sender))
                        if d["payload"]["message_id"] == result["message_id"]]
                assert len(out) == 1 and len(came) == 1
                assert out[0]["direction"] == "out" and came[0]["direction"] == "in"
                assert came[0]["payload"]["data"]["message"] == text
                assert came[0]["payload"]["msg_type"] == "private_message"
                assert came[0]["sender"]["glob_id"] == f"master${_gid(identities, sender)}"
                assert came[0]["recipient"]["glob_id"] == f"master${_gid(identities, receiver)}"
                assert out[0]["conversation_id"] == came[0]["conversation_id"]
                assert out[0]["state"] == "delivered" and out[0]["consumed"] is True
    conversations = nodes[0].ok("message_conversations_list", message_types=["private_message"])
    peers = {c["global_id"] for c in conversations}
    assert {_gid(identities, nodes[1]), _gid(identities, nodes[2])} <= peers
    assert all(c["type"] == "private_message" and c["key_id"].startswith("master$") for c in conversations)
    # Group conversations (test_messaging_groups.py may have made some) are listed apart.
    groups = nodes[0].ok("message_conversations_list", message_types=["group_message"])
    assert all(c["type"] == "group_message" and c["key_id"].startswith("group_") for c in groups)
    assert len(nodes[0].ok("message_conversations_list", limit=1)) == 1
    # Sealed and opened by the identity process: messaging never maps `cryptography`.
    for client in nodes:
        maps = client.maps("messaging")
        assert "uvloop" in maps and "cryptography" not in maps, client.name


def test_by_idurl_and_outgoing_consumer(net, identities):
    sender, receiver = net.nodes[1], net.nodes[2]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sender.ok("message_receive", consumer_callback_id="e2e-out", direction="outgoing", polling_timeout=0)
        poll = pool.submit(sender.ok, "message_receive", consumer_callback_id="e2e-out", direction="outgoing",
                           polling_timeout=POLL)
        result = sender.ok("message_send", recipient_id=identities[receiver.name]["idurl"], data={"n": 1})
        assert result["delivered"] is True
        sent = poll.result(timeout=POLL + 10)
    assert [m["message_id"] for m in sent] == [result["message_id"]] and sent[0]["dir"] == "outgoing"


def test_offline_recipient_gets_it_when_back_and_restarts_lose_nothing(net, identities):
    sender, receiver = net.nodes[4], net.nodes[5]
    receiver_id, sender_id = _gid(identities, receiver), _gid(identities, sender)
    _stop_program(receiver, "messaging")
    try:
        result = sender.ok("message_send", recipient_id=receiver_id, data={"message": "are you there?"},
                           message_ack_timeout=5)
        assert result["delivered"] is False and result["state"] == "pending"
        pending = [d for d in _history(sender, receiver_id) if d["payload"]["message_id"] == result["message_id"]]
        assert pending and pending[0]["state"] == "pending"
        # The sender's messaging process restarts: the outbox is on disk.
        sender.ok("service_restart", service_name="service_private_messages")
        assert [d["payload"]["message_id"] for d in _history(sender, receiver_id)].count(result["message_id"]) == 1
    finally:
        _start_program(receiver, "messaging")
    net.wait_healthy()

    def delivered() -> bool:
        found = [d for d in _history(sender, receiver_id) if d["payload"]["message_id"] == result["message_id"]]
        return bool(found) and found[0]["state"] == "delivered"

    wait_for(delivered, timeout=90, interval=0.5, what="the pending message delivered")
    came = [d for d in _history(receiver, sender_id) if d["payload"]["message_id"] == result["message_id"]]
    assert len(came) == 1 and came[0]["payload"]["data"] == {"message": "are you there?"}
    # The receiver's messaging process restarts: its history is kept, nothing twice.
    receiver.ok("service_restart", service_name="service_message_history")
    again = [d for d in _history(receiver, sender_id) if d["payload"]["message_id"] == result["message_id"]]
    assert len(again) == 1


def test_bad_inputs(net, identities):
    client = net.nodes[1]
    other = _gid(identities, net.nodes[2])
    host = identities["node-0"]["global_id"].split("@", 1)[1]
    cases = [
        ("message_send", dict(recipient_id=other, data="just text"), 400, "invalid_data"),
        ("message_send", dict(recipient_id=other, data=[1, 2]), 400, "invalid_data"),
        ("message_send", dict(recipient_id=f"nobody@{host}", data={"m": 1}), 404, "user_not_found"),
        ("message_send", dict(recipient_id="nosuchnickname", data={"m": 1}), 404, "user_not_found"),
        ("message_send", dict(recipient_id=other, data={"m": "x" * (300 * 1024)}), 413, "message_too_large"),
        ("message_send", dict(recipient_id=other, data={"m": 1}, message_ack_timeout=-1), 400, "invalid_argument"),
        ("message_send", dict(recipient_id=_gid(identities, client), data={"m": 1}), 400, "invalid_recipient"),
        ("message_history", dict(), 400, "invalid_argument"),
        ("message_history", dict(recipient_id=other, offset=-1), 400, "invalid_argument"),
        ("message_history", dict(recipient_id=other, limit=10**6), 400, "invalid_argument"),
        ("message_history", dict(recipient_id=other, message_type="spam"), 400, "invalid_argument"),
        ("message_conversations_list", dict(offset=-5), 400, "invalid_argument"),
        ("message_receive", dict(consumer_callback_id="c1", direction="sideways"), 400, "invalid_argument"),
        ("message_receive", dict(consumer_callback_id="c1", polling_timeout=-1), 400, "invalid_argument"),
        ("message_receive", dict(consumer_callback_id="c1", message_types="spam"), 400, "invalid_argument"),
        ("friend_remove", dict(user_id=f"nobody@{host}"), 404, "friend_not_found"),
        ("friend_add", dict(trusted_user_id=f"nobody@{host}"), 404, "user_not_found"),
    ]
    for method, kwargs, status, reason in cases:
        got, doc = client.call(method, **kwargs)
        assert (got, doc.get("reason")) == (status, reason), (method, kwargs, doc)
        assert doc["status"] == "ERROR"
    # The reference REST clients name the conversation with `id`.
    status, doc = client.get("/message/history/v1", id=other)
    assert status == 200 and isinstance(doc["result"], list)


def test_friends_with_contact_state(net, identities):
    client, friend = net.nodes[3], net.nodes[6]
    friend_id = _gid(identities, friend)
    added = client.call("friend_add", trusted_user_id=friend_id, alias="sixth")
    assert added[0] == 200 and added[1]["message"] == "new friend has been added"

    def state() -> str | None:
        found = [f for f in client.ok("friends_list") if f["global_id"] == friend_id]
        return found[0]["contact_state"] if found else None

    wait_for(lambda: state() == "CONNECTED", timeout=30, interval=0.2, what="friend CONNECTED")
    item = [f for f in client.ok("friends_list") if f["global_id"] == friend_id][0]
    assert item["alias"] == "sixth" and item["idurl"] == identities[friend.name]["idurl"]
    assert {"idhost", "username", "contact_state"} <= set(item)
    _stop_program(friend, "transport")
    try:
        wait_for(lambda: state() == "OFFLINE", timeout=30, interval=0.2, what="friend OFFLINE")
    finally:
        _start_program(friend, "transport")
    net.wait_healthy()
    client.ok("user_ping", user_id=friend_id, timeout=10)
    wait_for(lambda: state() == "CONNECTED", timeout=30, interval=0.2, what="friend CONNECTED again")
    again = client.call("friend_add", trusted_user_id=friend_id)
    assert again[1]["message"] == "this friend has been already added"
    client.ok("friend_remove", user_id=friend_id)
    assert state() is None
    status, doc = client.call("friend_remove", user_id=friend_id)
    assert (status, doc["reason"]) == (404, "friend_not_found")


async def test_websocket_client_gets_messages_pushed(net, identities):
    sender, receiver = net.nodes[2], net.nodes[3]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(receiver.ws_url + f"?api_secret={receiver.secret}") as ws:
            marker = uuid.uuid4().hex
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, lambda: sender.ok(
                "message_send", recipient_id=_gid(identities, receiver), data={"marker": marker}))
            assert result["delivered"] is True and result["consumed"] is True
            while True:
                msg = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                if msg["type"] == "stream_message" and msg["payload"]["message_id"] == result["message_id"]:
                    break
            payload = msg["payload"]
            assert payload["data"] == {"marker": marker} and payload["dir"] == "incoming"
            assert payload["sender"] == f"master${_gid(identities, sender)}"


@pytest.mark.parametrize("name", ["service_private_messages", "service_message_history"])
def test_messaging_services_are_on(net, name):
    assert net.nodes[1].ok("service_info", service_name=name)["state"] == "ON"
    for built in ("service_private_groups", "service_message_broker"):
        assert net.nodes[1].ok("service_info", service_name=built)["state"] == "ON"
