"""The DHT across a real local network: values, nicknames, forged records, restarts."""

from __future__ import annotations

import uuid

from tests.helpers import wait_for


def _read(client, key: str, **kwargs) -> dict:
    return client.ok("dht_value_get", key=key, **kwargs)


def test_value_set_on_one_node_is_read_on_every_other(net):
    key = "e2e-" + uuid.uuid4().hex[:8]
    value = {"hello": "world", "n": 7}
    wait_for(lambda: net.nodes[1].call("dht_value_set", key=key, value=value)[1].get("result", {}).get("write")
             == "success", timeout=60, interval=0.5, what="dht write")
    for client in net.nodes:
        got = wait_for(lambda c=client: (r := _read(c, key))["read"] == "success" and r, timeout=30, interval=0.2,
                       what=f"read on {client.name}")
        assert got["value"]["hello"] == "world" and got["value"]["n"] == 7


def test_plain_string_is_refused(net):
    status, doc = net.nodes[0].call("dht_value_set", key="x", value="not json")
    assert status == 400 and doc["errors"] == ["input value must be a json"]


def test_user_search_finds_every_nickname_from_any_node(net, identities):
    for searcher in (net.nodes[0], net.nodes[-1]):
        for client in net.nodes:
            found = wait_for(
                lambda s=searcher, c=client: (r := s.ok("user_search", nickname=c.name))["result"] == "exist" and r,
                timeout=60, interval=0.5, what=f"{client.name} from {searcher.name}")
            assert found["idurl"] == identities[client.name]["idurl"]
            assert found["global_id"] == identities[client.name]["global_id"]
    missing = net.nodes[2].ok("user_search", nickname="nobody-" + uuid.uuid4().hex[:6])
    assert missing["result"] == "not exist" and missing["position"] == -1
    observed = net.nodes[1].ok("user_observe", nickname=net.nodes[3].name, attempts=1)
    assert observed and observed[0]["idurl"] == identities[net.nodes[3].name]["idurl"]


def test_forged_nickname_record_is_refused(net, identities):
    victim = net.nodes[2].name
    forged = {"type": "nickname", "nickname": victim, "idurl": identities[net.nodes[4].name]["idurl"],
              "position": 0}
    status, doc = net.nodes[4].call("dht_value_set", key=f"{victim}:0", value=forged, record_type="nickname")
    # Refused by the writer (400) or by the nodes that hold the genuine record (write failed).
    assert status == 400 or doc["result"]["write"] == "failed", doc
    # The genuine record still resolves to the victim.
    found = net.nodes[0].ok("user_search", nickname=victim)
    assert found["idurl"] == identities[victim]["idurl"]


def test_values_survive_dht_restarts(net):
    key = "restart-" + uuid.uuid4().hex[:8]
    wait_for(lambda: net.nodes[2].call("dht_value_set", key=key, value={"v": 1})[1].get("result", {}).get("write")
             == "success", timeout=60, interval=0.5, what="dht write")
    for client in (net.nodes[1], net.nodes[3], net.nodes[0]):  # two nodes and the seed
        client.ok("service_restart", service_name="service_entangled_dht")
    for client in net.nodes:
        wait_for(lambda c=client: _read(c, key)["read"] == "success", timeout=60, interval=0.5,
                 what=f"read after restarts on {client.name}")
    status = net.nodes[1].ok("network_status", dht=True)
    assert status["dht"]["layers"][0]["contacts"] > 0


def test_discovery_on_layers(net, identities):
    others = {identities[c.name]["idurl"] for c in net.nodes[1:]}
    # Every node runs service_supplier, so each announces itself on the suppliers layer (3).
    found = wait_for(lambda: set(r) if (r := net.nodes[0].call("dht_user_random", layer_id=3, count=5)[1]
                                        .get("result")) else None, timeout=60, interval=0.5, what="suppliers layer")
    assert found and found <= others
    node = net.nodes[1].ok("dht_node_find")
    assert node["closest_nodes"] and {"address", "dht_id"} <= set(node["closest_nodes"][0])
    # Every node is also a customer: its suppliers record lists only other nodes (or is not there yet).
    record = net.nodes[2].ok("suppliers_list_dht", customer_id=identities[net.nodes[3].name]["global_id"])
    me = identities[net.nodes[3].name]["idurl"]
    assert all(s and s != me for s in record["suppliers"]), record
    dump = net.nodes[0].ok("dht_local_db_dump")
    assert isinstance(dump, dict) and any(dump.values())
