"""The node called exactly as clients written for the reference engine call it.

Raw REST requests with the `api_secret` header, the parameter names the reference REST handlers
read (`id`, `idurl`, `trusted_global_id`, `private_key_local_file`, …) and the bodies its
regression helpers send; an unknown parameter refused with 400; the legacy status option on and off.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from tests.e2e.client import NodeClient
from tests.helpers import wait_for

LEGACY = "interface/api/legacy-status-codes"


def _get(client: NodeClient, path: str) -> tuple[int, dict[str, Any]]:
    """A GET with a hand-built query string, as the reference helpers do."""
    return client.request("GET", "/" + path)


def _send(client: NodeClient, verb: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return client.request(verb, "/" + path, body=body)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _ok(answer: tuple[int, dict[str, Any]]) -> Any:
    status, doc = answer
    assert status == 200 and doc["status"] == "OK", doc
    return doc.get("result")


def test_suppliers_list_dht_reads_id_and_customer_idurl(net, identities):
    client, customer = net.nodes[1], identities[net.nodes[2].name]
    answers = [_ok(_get(client, f"supplier/list/dht/v1?{name}={_q(customer[field])}"))
               for name, field in (("customer_id", "global_id"), ("id", "global_id"), ("customer_idurl", "idurl"))]
    assert {a["customer_idurl"] for a in answers} == {customer["idurl"]}
    mine = _ok(_get(client, "supplier/list/dht/v1"))
    assert mine["customer_idurl"] == identities[client.name]["idurl"]


def test_unknown_parameter_is_refused_with_400(net, identities):
    client = net.nodes[1]
    status, doc = _get(client, f"supplier/list/dht/v1?customer={_q(identities[client.name]['global_id'])}")
    assert status == 400 and doc["status"] == "ERROR" and doc["reason"] == "unknown_parameter", doc
    assert "customer" in doc["errors"][0] and "customer_id" in doc["errors"][0]
    status, doc = _send(client, "POST", "message/send/v1", {"recipient": "x", "data": {}})
    assert status == 400 and doc["reason"] == "unknown_parameter", doc
    # The secret in the query is still accepted everywhere.
    status, doc = client.request("GET", f"/process/health/v1?api_secret={_q(client.secret)}", secret=None)
    assert status == 200 and doc["status"] == "OK", doc


def test_messages_and_pings_under_reference_names(net, identities):
    sender, receiver = net.nodes[4], net.nodes[5]
    target = identities[receiver.name]["global_id"]
    ping = _ok(_get(sender, f"user/ping/v1?id={_q(target)}&timeout=30&retries=2"))
    assert ping["command"] == "Ack"
    assert _ok(_get(sender, f"user/status/v1?id={_q(target)}"))["global_id"] == target
    text = f"reference {uuid.uuid4().hex[:8]}"
    sent = _ok(_send(sender, "POST", "message/send/v1", {"id": target, "data": {"text": text}, "timeout": 30}))
    assert sent["delivered"] is True
    history = _ok(_get(sender, f"message/history/v1?id={_q(target)}&message_type=private_message"))
    assert any(json.dumps(item).count(text) for item in history), history


def test_friends_under_reference_names(net, identities):
    client, friend = net.nodes[4], identities[net.nodes[5].name]
    added = _send(client, "POST", "friend/add/v1", {"idurl": friend["idurl"], "alias": "fifth"})
    assert _ok(added)["idurl"] == friend["idurl"]
    listed = [f for f in _ok(_get(client, "friend/list/v1")) if f["idurl"] == friend["idurl"]]
    assert listed and listed[0]["alias"] == "fifth"
    removed = _send(client, "DELETE", "friend/remove/v1", {"global_id": friend["global_id"]})
    assert _ok(removed)["idurl"] == friend["idurl"]


def test_grants_read_the_reference_trusted_names(net, identities):
    """The alias reaches the method: the answer is about the key, never a missing trusted_user_id."""
    client, other = net.nodes[1], identities[net.nodes[2].name]["global_id"]
    me = identities[client.name]["global_id"]
    for verb, path, body in (
        ("PUT", "share/grant/v1", {"key_id": f"share_{uuid.uuid4().hex}${me}", "trusted_global_id": other}),
        ("PUT", "share/grant/v1", {"key_id": f"share_{uuid.uuid4().hex}${me}", "trusted_idurl": other}),
        ("PUT", "group/share/v1", {"group_key_id": f"group_{uuid.uuid4().hex}${me}", "trusted_id": other}),
    ):
        status, doc = _send(client, verb, path, body)
        assert doc["status"] == "ERROR" and status != 400, (path, body, doc)
        assert "trusted_user_id" not in doc["errors"][0], doc


def test_identity_and_keys_under_reference_names(net, identities, tmp_path: Path):
    client = net.nodes[1]
    assert "xml" in _ok(_get(client, "identity/get/v1?xml_source=1"))
    backup = tmp_path / "key.backup"
    _ok(_send(client, "POST", "identity/backup/v1", {"destination_filepath": str(backup)}))
    assert backup.exists()
    # The file is read and parsed: the node then refuses only because it already has this identity.
    status, doc = _send(client, "POST", "identity/recover/v1", {"private_key_local_file": str(backup)})
    assert (status, doc["reason"]) == (409, "identity_exists"), doc
    status, doc = _send(client, "POST", "identity/recover/v1", {"private_key_local_file": str(tmp_path / "none")})
    assert (status, doc["reason"]) == (400, "invalid_private_key"), doc
    alias = "ref" + uuid.uuid4().hex[:6]
    key = _ok(_send(client, "POST", "key/create/v1", {"alias": alias, "key_size": 1024}))
    assert key["key_id"].startswith(alias + "$")
    _ok(_send(client, "DELETE", "key/erase/v1", {"key_id": key["key_id"]}))


def test_event_send_takes_the_body_as_data(net):
    result = _ok(_send(net.nodes[1], "POST", "event/send/reference-client-test/v1", {"color": "red", "n": 1}))
    assert result["data"] == {"color": "red", "n": 1}


def test_network_stun_answers_stun_success(net, identities):
    result = _ok(_get(net.nodes[3], "network/stun/v1"))
    assert result["result"] == "stun-success" and result["ip"] == "127.0.0.1" and int(result["port"]) > 0


@pytest.fixture
def legacy_node(net) -> Iterator[NodeClient]:
    client = net.nodes[2]
    try:
        yield client
    finally:
        client.request("POST", "/config/set/v1", body={"key": LEGACY, "value": "false"})


async def _ws_status(client: NodeClient, secret: str) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(client.ws_url + f"?api_secret={secret}"):
                return 101
        except aiohttp.WSServerHandshakeError as err:
            return err.status


async def _ws_call(client: NodeClient, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(client.ws_url + f"?api_secret={client.secret}") as ws:
            await ws.send_str(json.dumps({"command": "api_call", "method": method, "kwargs": kwargs, "call_id": "r1"}))
            async for msg in ws:
                doc = json.loads(msg.data)
                if doc.get("type") == "api_call":
                    return doc["payload"]["response"]
    raise AssertionError("no answer")


async def test_legacy_status_codes_on_and_off(legacy_node):
    client = legacy_node
    assert _get(client, "no/such/route/v1")[0] == 404
    assert _ok(_send(client, "POST", "config/set/v1", {"key": LEGACY, "value": "true"}))["value"] is True
    # At once, without a restart: every REST envelope, errors included, comes with HTTP 200.
    status, doc = _get(client, "no/such/route/v1")
    assert (status, doc["status"], doc["reason"]) == (200, "ERROR", "route_not_found"), doc
    status, doc = _get(client, "supplier/list/dht/v1?nope=1")
    assert (status, doc["status"], doc["reason"]) == (200, "ERROR", "unknown_parameter"), doc
    status, doc = client.request("GET", "/process/health/v1", secret="not-the-secret")
    assert (status, doc["status"], doc["reason"]) == (200, "ERROR", "forbidden"), doc
    status, doc = _get(client, "config/get/v1?key=no/such/option")
    assert (status, doc["status"]) == (200, "ERROR") and doc["errors"], doc
    assert _get(client, "process/health/v1")[0] == 200
    # The WebSocket is unchanged: the handshake is still refused, errors still carry their code.
    assert await _ws_status(client, "not-the-secret") == 403
    response = await _ws_call(client, "process_health", {"nope": 1})
    assert (response["status"], response["reason"], response["code"]) == ("ERROR", "unknown_parameter", 400)
    # And off again: real status codes.
    _ok(_send(client, "POST", "config/set/v1", {"key": LEGACY, "value": "false"}))
    assert _get(client, "no/such/route/v1")[0] == 404
    assert _get(client, "supplier/list/dht/v1?nope=1")[0] == 400


def test_options_reference_clients_set(net, identities):
    client = net.nodes[6]
    supplier = identities[net.nodes[4].name]
    changes = {
        "services/employer/candidates": supplier["idurl"],
        "services/identity-propagate/automatic-rotate-enabled": "false",
        "services/identity-propagate/preferred-servers": identities["node-0"]["idurl"].split("/")[2],
    }
    try:
        for key, value in changes.items():
            result = _ok(_send(client, "POST", "config/set/v1", {"key": key, "value": value}))
            assert result["key"] == key
            assert _ok(_get(client, f"config/get/v1?key={_q(key)}"))["value"] in (value, False)
    finally:
        for key in changes:
            default = next(o["default"] for o in _ok(_get(client, "config/list/v1")) if o["key"] == key)
            _ok(_send(client, "POST", "config/set/v1", {"key": key, "value": default}))


def test_events_are_followed_in_the_event_log(net):
    client = net.nodes[3]
    marker = f"ref-{uuid.uuid4().hex[:8]}"
    _ok(_send(client, "POST", f"event/send/{marker}/v1", {"n": 1}))
    log = client.home.logs / "event.log"

    def logged() -> bool:
        lines = [line.split("  ", 2) for line in log.read_text().splitlines()]
        return any(len(parts) == 3 and parts[1] == marker and json.loads(parts[2]) == {"n": 1} for parts in lines)

    wait_for(logged, timeout=10, what="the event in event.log")
