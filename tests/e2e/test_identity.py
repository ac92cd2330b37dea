"""Identities on a real local network: creation, the identity server, forgeries, recovery, keys."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request

import pytest

from common import crypto
from services.identity import document
from tests.helpers import wait_for


def _id_server(net) -> str:
    return "http://" + net.nodes[0].ok("network_configuration")["identity_servers"][0]


def _upload(server: str, xml: str) -> tuple[int, str]:
    req = urllib.request.Request(server + "/upload", data=xml.encode(), method="POST",
                                 headers={"Content-Type": "application/xml"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_every_node_has_a_verifiable_identity(net, identities):
    server = _id_server(net)
    for client in net.nodes:
        info = identities[client.name]
        assert info["name"] == client.name and info["idurl"] == f"{server}/{client.name}.xml"
        assert info["global_id"] == f"{client.name}@{server.removeprefix('http://').replace(':', '_')}"
        with urllib.request.urlopen(info["idurl"], timeout=10) as response:
            doc = document.parse_verified(response.read())
        assert doc.publickey == info["publickey"]
    status, body = net.nodes[1].call("identity_create", username="another")
    assert (status, body["reason"]) == (409, "identity_exists")


def test_another_node_fetches_and_verifies(net, identities):
    target = identities[net.nodes[2].name]
    # Pinging a node makes the pinging node fetch and verify the target's identity.
    net.nodes[3].ok("user_ping", user_id=target["global_id"], timeout=20)
    cached = net.nodes[3].ok("identity_cache_list")
    entry = next(item for item in cached if item.get("idurl") == target["idurl"])
    assert entry.get("publickey", target["publickey"]) == target["publickey"]


def test_forged_uploads_are_refused(net, identities):
    server = _id_server(net)
    with urllib.request.urlopen(identities["node-1"]["idurl"], timeout=10) as response:
        original = document.parse_verified(response.read())
    # A changed field under the old signature.
    tampered = dataclasses.replace(original, contacts=("tcp://127.0.0.1:1",), revision=original.revision + 1)
    status, _ = _upload(server, tampered.to_xml())
    assert status == 400
    # Another key claiming a taken name, validly self-signed.
    thief = crypto.generate_private_key(1024)
    stolen = document.new_document(list(original.sources), list(original.contacts), thief,
                                   revision=original.revision + 1)
    status, _ = _upload(server, stolen.to_xml())
    assert status == 409
    # Garbage.
    status, _ = _upload(server, "<identity><nope/>")
    assert status == 400
    with urllib.request.urlopen(identities["node-1"]["idurl"], timeout=10) as response:
        assert document.parse_verified(response.read()).publickey == original.publickey


def test_stale_revision_is_refused(net, identities):
    server = _id_server(net)
    with urllib.request.urlopen(identities["node-4"]["idurl"], timeout=10) as response:
        current = document.parse_verified(response.read())
    older = dataclasses.replace(current, revision=max(0, current.revision - 1), date="Jan 01, 2020")
    status, _ = _upload(server, older.to_xml())
    assert status in (400, 409)


def test_backup_erase_recover(net, identities, tmp_path):
    client = net.nodes[5]
    before = client.ok("identity_get")
    backup = tmp_path / "node-5.backup"
    client.ok("identity_backup", destination_filepath=str(backup))
    assert backup.stat().st_mode & 0o777 == 0o600
    client.ok("identity_erase", erase_private_key=True)
    status, doc = client.call("identity_get")
    assert (status, doc["reason"]) == (404, "identity_not_exist")
    recovered = client.ok("identity_recover", private_key_source=backup.read_text())
    assert recovered["idurl"] == before["idurl"] and recovered["publickey"] == before["publickey"]
    assert client.ok("identity_get")["global_id"] == before["global_id"]


def test_bad_identity_names(net):
    client = net.nodes[0]
    for name in ("", "Bad Name", "x" * 40, "../etc"):
        status, doc = client.call("identity_create", username=name)
        assert status in (400, 409), (name, doc)


def test_keys_survive_identity_restart(net, identities):
    client = net.nodes[4]
    created = client.ok("key_create", key_alias="e2ekey", key_size=1024, label="first")
    key_id = created["key_id"]
    try:
        client.ok("key_label", key_id=key_id, label="second")
        client.ok("key_state", key_id=key_id, active=False)
        status, doc = client.call("key_create", key_alias="bad", key_size=1000)
        assert status == 400
        status, doc = client.call("key_erase", key_id=f"master${identities['node-4']['global_id']}")
        assert (status, doc["reason"]) == (409, "master_key_protected")
        before = client.ok("process_info")
        client.ok("service_restart", service_name="service_keys_registry")
        wait_for(lambda: client.call("key_get", key_id=key_id)[0] == 200, timeout=30, what="identity back")
        key = client.ok("key_get", key_id=key_id)
        assert key["label"] == "second" and key["active"] is False
        assert before["processes"] != client.ok("process_info")["processes"]
    finally:
        client.ok("key_erase", key_id=key_id)
    status, doc = client.call("key_get", key_id=key_id)
    assert (status, doc["reason"]) == (404, "key_not_found")


@pytest.mark.parametrize("size", [1024])
def test_key_model_pushed_over_websocket(net, identities, size):
    import asyncio
    import json
    import uuid

    import aiohttp

    client = net.nodes[1]

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(client.ws_url + f"?api_secret={client.secret}") as ws:
                await ws.send_str(json.dumps({"command": "api_call", "method": "enable_model_listener",
                                              "kwargs": {"model_name": "key"}, "call_id": "1"}))
                alias = "ws" + uuid.uuid4().hex[:6]
                await ws.send_str(json.dumps({"command": "api_call", "method": "key_create",
                                              "kwargs": {"key_alias": alias, "key_size": size}, "call_id": "2"}))
                while True:
                    msg = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                    if msg["type"] == "model" and msg["payload"]["name"] == "key" and alias in msg["payload"]["id"]:
                        break
                await ws.send_str(json.dumps({"command": "api_call", "method": "key_erase",
                                              "kwargs": {"key_id": msg["payload"]["id"]}, "call_id": "3"}))

    asyncio.run(run())
