"""The DHT across a real local network: values, nicknames, forged records, restarts."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Coroutine

from kademlia.node import Node

from common import crypto
from common.config_store import ConfigStore
from services.dht import members, records
from services.dht.node import DhtNode
from services.dht.storage import DhtStore
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
    # The nodes that hold the genuine record refuse it (another signer). A node that holds no copy (one whose
    # STORE of the genuine record was refused as busy, the writer itself) may keep the claim, so the write
    # can report success; readers take the claim most storing nodes hold, so every one resolves the victim.
    assert status in (200, 400), doc
    for reader in net.nodes:
        found = reader.ok("user_search", nickname=victim)
        assert found["idurl"] == identities[victim]["idurl"], (reader.name, found)


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


class HostileDhtNode:
    """A DHT node the test runs in a thread of its own: it keeps and serves whatever it is given."""

    def __init__(self, port: int):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.node = DhtNode(DhtStore(":memory:"), rpc_timeout=3.0)  # no verifier: it checks nothing
        self.run(self.node.listen(port))

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _plant(self, env: dict) -> None:
        self.node.store.put(records.storage_key(env["layer_id"], env["record_type"], env["key"]), env,
                            records.canonical(env))

    def plant(self, env: dict) -> None:
        """Hold `env` as if a peer had stored it here (a hostile storing node)."""
        self.run(self._plant(env))

    def store(self, port: int, dht_id: str, env: dict) -> Any:
        """STORE `env` straight to the node on UDP `port`; its answer."""
        dkey = records.storage_key(env["layer_id"], env["record_type"], env["key"])
        ok, answer = self.run(self.node.proto.call_store(Node(bytes.fromhex(dht_id), "127.0.0.1", port), dkey,
                                                         records.canonical(env)))
        assert ok, "the node did not answer the STORE"
        return answer

    def values_served(self) -> int:
        return int(self.node.proto.stats.rpc_responses["findValue"])

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.node.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _dht_port(client) -> int:
    return int(ConfigStore(client.home.options_file).get("services/entangled-dht/udp-port"))


def _random_users(client, layer: int) -> set[str]:
    """Every member `dht_user_random` knows on `layer`; none before the first announcements land."""
    status, doc = client.call("dht_user_random", layer_id=layer, count=50)
    if status == 404 and doc.get("reason") == "users_not_found":
        return set()
    assert status == 200, doc
    return set(doc["result"])


def _forged_entry(layer: int, idurl: str, key: Any, **over: Any) -> dict:
    entry = members.new_entry(idurl, "ee" * 20, "10.6.6.6:666", int(time.time()) + 60, 300)
    entry.update(over)
    entry["signature"] = crypto.b64(crypto.sign(key, members.signed_bytes(layer, entry)))
    return entry


def _bucket(layer: int, bucket: int, entries: list[dict]) -> dict:
    return records.make_envelope(layer, records.LAYER_MEMBERS, members.bucket_key(bucket), {"members": entries},
                                 time.time() + 300, "ee" * 20)


def test_forged_layer_members_never_reach_dht_user_random(net, identities):
    layer = 3  # every node runs service_supplier, so every node announces itself on layer 3
    reader = net.nodes[0]
    genuine = {identities[c.name]["idurl"] for c in net.nodes[1:]}
    wait_for(lambda: _random_users(reader, layer) == genuine, timeout=120,
             interval=1, what="every genuine member on layer 3")

    victim = net.nodes[2]
    victim_idurl = identities[victim.name]["idurl"]
    victim_dht_id = victim.ok("dht_node_find")["my_dht_id"]
    id_server = victim_idurl.split("/")[2]
    attacker_key = crypto.generate_private_key(1024)
    fakes: dict[int, list[dict]] = {b: [] for b in range(members.MEMBER_BUCKETS)}
    for i in range(400):
        idurl = f"http://{id_server}/fake{i}.xml"
        if len(fakes[members.bucket_of(idurl)]) < 2:
            fakes[members.bucket_of(idurl)].append(_forged_entry(layer, idurl, attacker_key))
    fake_idurls = {e["idurl"] for found in fakes.values() for e in found}
    assert len(fake_idurls) == 2 * members.MEMBER_BUCKETS
    # The victim's name with the attacker's signature, newer than the victim's own entry.
    impostor = _forged_entry(layer, victim_idurl, attacker_key)
    fakes[members.bucket_of(victim_idurl)].append(impostor)

    seed_port = _dht_port(net.nodes[0])
    hostile = HostileDhtNode(seed_port + 64)  # beside the network's DHT ports, below the ephemeral range
    try:
        # A storing node refuses a STORE made only of forged entries, sent straight to its UDP port.
        target = net.nodes[1]
        target_id = target.ok("dht_node_find")["my_dht_id"]
        victim_bucket = members.bucket_of(victim_idurl)
        assert hostile.store(_dht_port(target), target_id, _bucket(layer, victim_bucket, [impostor])) is False
        assert hostile.store(_dht_port(target), target_id, _bucket(layer, 0, fakes[0])) is False

        # A hostile storing node in the network serves forged entries for every bucket of the layer.
        for bucket, entries in fakes.items():
            hostile.plant(_bucket(layer, bucket, entries))
        assert hostile.run(hostile.node.bootstrap([("127.0.0.1", seed_port)]))
        everyone = {identities[c.name]["idurl"] for c in net.nodes}

        def only_genuine(client, served_before: int) -> bool:
            found = _random_users(client, layer)
            assert not found & fake_idurls, found
            assert found <= everyone, found
            # Done once every member was returned by a read that asked the hostile node too.
            return found == everyone - {identities[client.name]["idurl"]} and hostile.values_served() > served_before

        for client in (reader, net.nodes[3]):
            # The hostile node is among every bucket's closest nodes, so reads ask it for the layer.
            wait_for(lambda c=client, s=hostile.values_served(): only_genuine(c, s), timeout=60,
                     interval=0.5, what=f"a read of layer 3 on {client.name} through the hostile node")

        closest = reader.ok("dht_node_find", layer_id=layer)["closest_nodes"]
        assert {n["idurl"] for n in closest} == everyone
        assert all(n["dht_id"] != "ee" * 20 and n["address"] != "10.6.6.6:666" for n in closest), closest
        assert next(n for n in closest if n["idurl"] == victim_idurl)["dht_id"] == victim_dht_id
    finally:
        hostile.close()

    # No real node kept a forged entry, whatever the hostile node handed it.
    for client in net.nodes:
        held = client.ok("dht_local_db_dump").get(str(layer), [])
        entries = [e for item in held if item["record_type"] == records.LAYER_MEMBERS
                   for e in item["value"]["members"]]
        assert entries, client.name
        assert not {e["idurl"] for e in entries} & fake_idurls
        assert all(e["dht_id"] != "ee" * 20 for e in entries), client.name

    # Those checks ran without `cryptography`: the dht process never maps it (common/rsa_public.py).
    for client in net.nodes:
        maps = client.maps("dht")
        assert "uvloop" in maps and "cryptography" not in maps, client.name
