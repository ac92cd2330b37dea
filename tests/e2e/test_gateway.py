"""The gateway of a real node: envelope, status codes, secret, every route, WebSocket."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest

from common import registry
from deploy.node import PROJECT_DIR
from tests.e2e.client import NodeClient
from tests.helpers import wait_for

# Methods that would take the node (or its network presence) away from the other tests.
DISRUPTIVE = {"process_stop", "process_restart", "network_disconnect", "identity_erase", "identity_rotate"}
HTTP_STATUSES = {200, 400, 403, 404, 405, 409, 501, 503, 504}  # 403: block produce by a non-foundation node


def test_health_envelope(net):
    status, doc = net.nodes[0].get("/process/health/v1")
    assert status == 200
    assert doc["status"] == "OK" and float(doc["execution"]) >= 0


def test_secret_missing_or_wrong_is_refused(net):
    client = net.nodes[1]
    status, doc = client.request("GET", "/process/health/v1", secret=None)
    assert (status, doc["status"], doc["reason"]) == (401, "ERROR", "unauthorized")
    status, doc = client.request("GET", "/process/health/v1", secret="not-the-secret")
    assert (status, doc["reason"]) == (403, "forbidden")
    status, doc = client.request("GET", "/openapi.json", secret=None)
    assert status == 401


def test_unknown_route_and_wrong_verb(net):
    status, doc = net.nodes[0].get("/no/such/route/v1")
    assert (status, doc["status"], doc["reason"]) == (404, "ERROR", "route_not_found")
    status, doc = net.nodes[0].request("POST", "/process/health/v1", body={})
    assert status == 405 and doc["status"] == "ERROR"


def test_bad_parameters_are_400(net):
    client = net.nodes[0]
    status, doc = client.request("POST", "/config/set/v1", body={"key": "services/customer/suppliers-number",
                                                                 "value": 5})
    assert (status, doc["reason"]) == (400, "invalid_value")
    status, doc = client.request("POST", "/config/set/v1", body={"value": 5})
    assert (status, doc["reason"]) == (400, "invalid_argument")
    status, doc = client.get("/config/list/v1", sort="maybe")
    assert (status, doc["reason"]) == (400, "invalid_argument")
    status, doc = client.request("POST", "/event/send/v1", body=[1, 2])
    assert status in (400, 404)
    raw = client.base + "/config/set/v1"
    import urllib.error
    import urllib.request

    req = urllib.request.Request(raw, data=b"{not json", method="POST", headers={"api_secret": client.secret})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and json.loads(err.value.read())["reason"] == "invalid_argument"


def test_unknown_objects_are_404(net):
    client = net.nodes[0]
    status, doc = client.get("/config/get/v1", key="no/such/option")
    assert (status, doc["reason"]) == (404, "option_not_found")
    status, doc = client.get("/service/info/service_nope/v1")
    assert (status, doc["reason"]) == (404, "service_not_found")
    status, doc = client.request("POST", "/network/select/v1", body={"name": "nonet"})
    assert (status, doc["reason"]) == (404, "network_not_found")


def _fill(pattern: str) -> str:
    path = pattern
    for name in registry.Route("GET", pattern).path_params:
        path = path.replace(f"(?P<{name}>[^/]+)", "x")
    return path


# The only methods allowed to answer 501: none, since the ledger (blockchain and billing) is built. The list
# only shrinks: nothing may join it.
NOT_BUILT: set[str] = set()


# Long polls asked to wait a second rather than their default window (60 s and 5 s).
SHORT_WAITS = {"message_receive": {"polling_timeout": 1}, "network_connected": {"wait_timeout": 1}}


def _listen_while_sending(client: NodeClient, consumer: str) -> list[dict]:
    """`event_listen` for a new consumer, with events sent until it returns.

    A first listen registers the consumer and waits out its 25 s window unless an event comes.
    """
    with ThreadPoolExecutor(1) as pool:
        listening = pool.submit(client.ok, "event_listen", consumer_callback_id=consumer)

        def returned() -> bool:
            client.ok("event_send", event_id="test-event", data={"n": 1})
            return listening.done()

        wait_for(returned, timeout=40, interval=0.2, what="event_listen returned at an event")
        return listening.result()


def test_every_route_answers_with_an_envelope(net):
    client = net.nodes[-1]
    _listen_while_sending(client, "x")  # the consumer `_fill` names; events sent later end its polls at once
    seen, not_built = set(), set()
    for method in registry.load():
        if method.name in DISRUPTIVE:
            continue
        if method.name == "event_listen":
            client.ok("event_send", event_id="route-check", data={})
        for route in method.routes:
            body = None if route.verb == "GET" else {}
            status, doc = client.request(route.verb, _fill(route.pattern), body=body,
                                         params=SHORT_WAITS.get(method.name), timeout=90)
            assert status in HTTP_STATUSES, (method.name, route.pattern, status, doc)
            assert doc["status"] in ("OK", "ERROR") and "execution" in doc, (method.name, doc)
            if doc["status"] == "ERROR":
                assert doc["errors"] and doc["reason"], (method.name, doc)
            if status == 501:
                not_built.add(method.name)
            seen.add(method.name)
    assert len(seen) + len(DISRUPTIVE) + 3 == len(registry.load()) == 125
    assert not_built <= NOT_BUILT, not_built - NOT_BUILT


def test_disruptive_routes_answer_and_recover(net, identities):
    client = net.nodes[-1]
    status, doc = client.request("GET", "/network/disconnect/v1")
    assert status == 200 and doc["result"]["network_connector_state"] == "DISCONNECTED"
    status, doc = client.request("GET", "/network/reconnect/v1")
    assert status == 200 and doc["result"]["network_connector_state"] == "CONNECTED"
    # One identity server on this network: nowhere to rotate to.
    status, doc = client.request("PUT", "/identity/rotate/v1", body={})
    assert (status, doc["reason"]) == (409, "no_identity_server")
    assert client.ok("user_ping", user_id=identities[net.nodes[0].name]["global_id"], timeout=20)["command"] == "Ack"


def test_openapi_lists_every_route(net):
    status, doc = net.nodes[0].get("/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    routes = sum(len(ops) for ops in doc["paths"].values())
    assert routes == sum(len(m.routes) for m in registry.load())


def test_config_round_trip_and_tree(net):
    client = net.nodes[2]
    client.ok("config_set", key="services/customer/suppliers-number", value=4)
    got = client.ok("config_get", key="services/customer/suppliers-number")
    assert got["value"] == 4
    status, doc = client.get("/config/get/services/customer/suppliers-number/v1")
    assert status == 200 and doc["result"]["value"] == 4
    options = {o["key"]: o for o in client.ok("configs_list")}
    assert options["services/customer/suppliers-number"]["possible_values"] == [2, 4, 7, 13, 18, 26, 64]
    assert options["interface/api/rest-http-port"]["value"] == client.api_port
    tree = client.ok("configs_tree")[0]
    assert set(tree) == {"interface", "logs", "paths", "personal", "services"}
    assert tree["services"]["customer"]["suppliers-number"]["value"] == 4
    assert "info" not in tree["services"]["customer"]["suppliers-number"]
    detailed = {o["key"]: o for o in client.ok("configs_list", include_info=True)}
    assert "one of 2, 4" in detailed["services/customer/suppliers-number"]["info"]
    client.ok("config_set", key="services/customer/suppliers-number", value=2)


def test_services_list_shape(net):
    items = net.nodes[0].ok("services_list")
    by_name = {item["name"]: item for item in items}
    for name in ("service_identity_server", "service_entangled_dht", "service_tcp_transport", "service_customer",
                 "service_supplier", "service_private_messages", "service_private_groups",
                 "service_message_history", "service_shared_data"):
        item = by_name[name]
        assert set(item) >= {"name", "state", "enabled", "installed", "depends", "config_path", "process"}
        assert item["state"] in ("ON", "OFF", "STARTING", "STOPPING", "DEPENDS_OFF")
    assert by_name["service_identity_server"]["enabled"] is True  # node 0 hosts it
    assert by_name["service_private_messages"]["state"] == "ON"
    assert by_name["service_private_groups"]["state"] == "ON" and by_name["service_message_broker"]["state"] == "ON"


def test_service_stop_and_start_switch_dependents(net):
    client = net.nodes[3]
    client.ok("service_stop", service_name="service_keys_registry")
    try:
        assert client.ok("service_info", service_name="service_keys_registry")["state"] == "OFF"
        assert client.ok("config_get", key="services/keys-registry/enabled")["value"] is False
        assert client.ok("service_info", service_name="service_supplier")["state"] == "DEPENDS_OFF"
        status, doc = client.get("/service/health/service_supplier/v1")
        assert status == 503
    finally:
        client.ok("service_start", service_name="service_keys_registry")
    assert client.ok("service_info", service_name="service_supplier")["state"] == "ON"


def test_events_long_poll(net):
    client = net.nodes[1]
    consumer = f"test-{uuid.uuid4().hex[:8]}"
    events = _listen_while_sending(client, consumer)  # a first listen ends at the first event
    assert any(e["event_id"] == "test-event" and e["data"] == {"n": 1} for e in events)
    client.ok("event_send", event_id="later-event", data={"n": 2})  # kept for the known consumer
    events = client.ok("event_listen", consumer_callback_id=consumer)
    assert any(e["event_id"] == "later-event" and e["data"] == {"n": 2} for e in events)
    assert client.ok("events_list")["test-event"] >= 1
    status, doc = client.request("POST", "/event/send/bad.id/v1", body={})
    assert status == 400


def test_automats_list_and_events(net):
    client = net.nodes[1]
    machines = client.ok("automats_list")
    assert any(m["id"] == "service_customer" for m in machines)
    one = client.ok("automat_info", automat_id="service_customer")
    assert one["state"] in ("ON", "DEPENDS_OFF", "STARTING")
    started = client.ok("automat_events_start", automat_id="service_customer")
    assert started["events"] is True
    assert client.ok("automat_events_stop", index=one["index"])["events"] is False
    status, doc = client.get("/automat/info/v1", automat_id="nope")
    assert (status, doc["reason"]) == (404, "automat_not_found")


def test_network_configuration(net):
    conf = net.nodes[2].ok("network_configuration")
    assert conf["name"] == "localnet" and conf["identity_servers"] and conf["dht_seeds"]
    path = net.root / "other-net.json"
    path.write_text(json.dumps({"name": "othernet", "identity_servers": ["127.0.0.1:1"], "dht_seeds": []}))
    created = net.nodes[2].ok("network_create", url=str(path))
    assert created["name"] == "othernet"
    assert net.nodes[2].ok("network_configuration")["selected"] == "localnet"
    net.nodes[2].ok("network_select", name="othernet")
    assert net.nodes[2].ok("network_configuration")["name"] == "othernet"
    net.nodes[2].ok("network_select", name="localnet")
    bad = net.root / "bad-net.json"
    bad.write_text("{\"name\": \"x y\"}")
    status, doc = net.nodes[2].request("POST", "/network/create/v1", body={"url": str(bad)})
    assert (status, doc["reason"]) == (400, "invalid_network")


def test_cli_api_call(net):
    client = net.nodes[0]
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "--home", str(client.home.root), "api",
                          "config_get", "key=services/customer/suppliers-number"],
                         cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"]["key"] == "services/customer/suppliers-number"


# ---- WebSocket ---------------------------------------------------------------------------

async def _ws_call(ws: aiohttp.ClientWebSocketResponse, method: str, seen: list | None = None, **kwargs) -> dict:
    """Send one api_call and return its response; other messages received meanwhile go to `seen`."""
    call_id = uuid.uuid4().hex
    await ws.send_str(json.dumps({"command": "api_call", "method": method, "kwargs": kwargs, "call_id": call_id}))
    while True:
        msg = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        if msg["type"] == "api_call" and msg["payload"]["call_id"] == call_id:
            return msg["payload"]["response"]
        if seen is not None:
            seen.append(msg)


async def test_websocket_refuses_bad_secret(net):
    client: NodeClient = net.nodes[0]
    async with aiohttp.ClientSession() as session:
        for secret, code in ((None, 401), ("wrong", 403)):
            url = client.ws_url + (f"?api_secret={secret}" if secret else "")
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(url)
            assert err.value.status == code


async def test_websocket_api_call_events_and_models(net):
    client: NodeClient = net.nodes[0]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(client.ws_url + f"?api_secret={client.secret}") as ws:
            response = await _ws_call(ws, "process_health")
            assert response["status"] == "OK"
            response = await _ws_call(ws, "config_get", key="no/such")
            assert response["status"] == "ERROR" and response["reason"] == "option_not_found"
            response = await _ws_call(ws, "no_such_method")
            assert response["reason"] == "method_not_found"
            await _ws_call(ws, "event_send", event_id="ws-pushed", data={"x": 1})
            while True:
                msg = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                if msg["type"] == "event" and msg["payload"]["event_id"] == "ws-pushed":
                    assert msg["payload"]["data"] == {"x": 1}
                    break
            seen: list = []
            response = await _ws_call(ws, "enable_model_listener", seen, model_name="service", request_all=True)
            assert response["status"] == "OK" and response["result"]["items"] > 10
            models = [m["payload"] for m in seen if m["type"] == "model" and m["payload"]["name"] == "service"]
            assert len(models) == response["result"]["items"]
            assert {"id", "data", "created"} <= set(models[0])
            # A state change is pushed without asking.
            await _ws_call(ws, "service_stop", service_name="service_message_history")
            try:
                while True:
                    msg = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                    if msg["type"] == "model" and msg["payload"]["id"] == "service_message_history":
                        assert msg["payload"]["data"]["state"] == "OFF"
                        break
            finally:
                await _ws_call(ws, "service_start", service_name="service_message_history")


# Hostile values for every parameter of every route: each answer is an envelope with a real status,
# and no process restarts. Waits are kept short where a parameter is not the one under test.
HOSTILE_JSON = [10**30, -1, -(10**30), 1e300, [[[[]]]], {"a": {"b": [10**20]}}, "\ud800"]
HOSTILE_QUERY = ["1" + "0" * 30, "-1", "%ED%A0%80", "1e400", "nan", "x" * 5000]
QUIET = {"timeout": 1, "wait_timeout": 1, "polling_timeout": 1, "ping_timeout": 1, "message_ack_timeout": 1,
         "wait_result": False, "attempts": 1}
NOT_FUZZED = DISRUPTIVE | {"identity_backup"}  # writes a private key wherever it is told: nothing to learn


def _raw(client: NodeClient, verb: str, path: str, query: str = "", body: bytes | None = None) -> tuple[int, dict]:
    url = client.base + path + (("?" + query) if query else "")
    req = urllib.request.Request(url, data=body, method=verb,
                                 headers={"Content-Type": "application/json", "api_secret": client.secret})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw)  # not JSON: not an envelope, the test fails here


def test_hostile_values_never_break_a_route(net):
    client = net.nodes[-2]
    before = {p["name"]: p["pid"] for p in client.ok("process_info")["processes"]}
    tried = 0
    for method in registry.load():
        if method.name in NOT_FUZZED or not method.params or not method.routes:
            continue
        route = next((r for r in method.routes if not r.path_params), method.routes[0])
        path = _fill(route.pattern)
        names = [p.name for p in method.params if p.name not in route.path_params]
        for name in names:
            base = {n: QUIET.get(n, "x") for n in names if n != name}
            values = HOSTILE_QUERY if route.verb == "GET" else HOSTILE_JSON
            for value in values:
                if route.verb == "GET":
                    query = urllib.parse.urlencode({k: str(v) for k, v in base.items()}) + f"&{name}={value}"
                    status, doc = _raw(client, "GET", path, query.lstrip("&"))
                else:
                    body = json.dumps(dict(base, **{name: value}), ensure_ascii=True).encode()
                    status, doc = _raw(client, route.verb, path, body=body)
                assert status in HTTP_STATUSES | {413}, (method.name, name, value, status, doc)
                assert doc["status"] in ("OK", "ERROR") and "execution" in doc, (method.name, name, doc)
                tried += 1
    assert tried > 500
    after = {p["name"]: p["pid"] for p in client.ok("process_info")["processes"]}
    assert after == before
