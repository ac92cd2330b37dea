"""The dht process on the real bus: three nodes (one nats-server each) forming a DHT on loopback."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from kademlia.node import Node as DhtPeer

from common import codec, crypto
from common.bus import Bus
from common.config_store import ConfigStore
from common.endpoint import endpoint
from common.errors import NodeError, NotFoundError, UnavailableError
from common.home import NodeHome
from common.process import ProcessContext, ServiceBase
from services.dht import members, records
from services.dht.service import DhtService
from tests.helpers import await_for, connect, free_port, nats_server, running_service


class FakeIdentityService(ServiceBase):
    """The identity verbs the dht process calls, with a 1024-bit key and a shared key directory."""

    def __init__(self, ctx: ProcessContext, name: str, registry: dict[str, str]):
        super().__init__(ctx)
        self.key = crypto.generate_private_key(1024)
        self.idurl = f"http://127.0.0.1:8084/{name}.xml"
        self.registry = registry
        registry[self.idurl] = crypto.public_key_to_ssh(self.key.public_key())

    @endpoint("sign", internal=True)
    async def sign(self, data: str) -> dict[str, Any]:
        return {"signature": crypto.b64(crypto.sign(self.key, crypto.unb64(data))), "key_id": "master$x"}

    @endpoint("my_identity", internal=True)
    async def my_identity(self) -> dict[str, Any]:
        return {"idurl": self.idurl, "global_id": records.global_id_from_idurl(self.idurl)}

    @endpoint("fetch", internal=True)
    async def fetch(self, idurl: str) -> dict[str, Any]:
        if idurl not in self.registry:
            raise NotFoundError("unknown identity", reason="identity_not_found")
        return {"idurl": idurl, "publickey": self.registry[idurl]}


class Node:
    """One test node: its home, bus, fake identity and (re)startable dht service."""

    def __init__(self, home: NodeHome, name: str, stack: contextlib.AsyncExitStack):
        self.home, self.name, self.stack = home, name, stack
        self.dht_stack: contextlib.AsyncExitStack | None = None
        self.service: DhtService | None = None
        self.client: Bus | None = None
        self.registry: dict[str, str] = {}
        """The identity directory the fake identity services share (what identity servers serve)."""

    async def start_dht(self) -> DhtService:
        self.dht_stack = contextlib.AsyncExitStack()
        self.service = await self.dht_stack.enter_async_context(running_service(self.home, "dht", DhtService))
        return self.service

    async def stop_dht(self) -> None:
        assert self.dht_stack is not None
        await self.dht_stack.aclose()

    async def call(self, method: str, **kwargs: Any) -> Any:
        assert self.client is not None
        return await self.client.call(f"api.dht.{method}", kwargs, timeout=20)

    async def internal(self, verb: str, **kwargs: Any) -> Any:
        assert self.client is not None
        return await self.client.call_internal("dht", verb, timeout=20, **kwargs)


@contextlib.asynccontextmanager
async def dht_network(tmp_path: Path, count: int) -> AsyncIterator[list[Node]]:
    registry: dict[str, str] = {}
    seed_port = free_port(socket.SOCK_DGRAM)
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for i in range(count):
            home = stack.enter_context(nats_server(tmp_path / f"node-{i}"))
            config = ConfigStore(home.options_file)
            config.set("services/entangled-dht/udp-port", seed_port if i == 0 else free_port(socket.SOCK_DGRAM))
            config.set("services/entangled-dht/known-nodes", f"127.0.0.1:{seed_port}")
            config.set("services/supplier/enabled", i == 1)
            node = Node(home, f"node{i}", stack)
            node.registry = registry
            await stack.enter_async_context(
                running_service(home, "identity", lambda ctx, n=i: FakeIdentityService(ctx, f"node{n}", registry)))
            node.client = await connect(home)
            stack.push_async_callback(node.client.close)
            nodes.append(node)
        for node in nodes:
            await node.start_dht()
        try:
            for node in nodes[1:]:
                await await_for(lambda n=node: _connected(n), timeout=15, what=f"{node.name} joined")
            yield nodes
        finally:
            for node in nodes:
                with contextlib.suppress(Exception):
                    await node.stop_dht()


async def _connected(node: Node) -> bool:
    try:
        status = await node.internal("status")
    except UnavailableError:  # not serving yet: keep polling until the deadline
        return False
    return bool(status["state"] == "CONNECTED")


async def test_values_records_nicknames_and_layers_across_nodes(tmp_path: Path):
    async with dht_network(tmp_path, 3) as (seed, n1, n2):
        events: list[dict[str, Any]] = []

        async def collect(msg: Any) -> None:
            events.append(codec.loads(msg.data))

        sub = await n1.client.nc.subscribe("evt.dht-layer-connected", cb=collect)

        # A plain string is not JSON: the reference engine's refusal, as a 400.
        with pytest.raises(NodeError) as err:
            await n1.call("dht_value_set", key="anchor_test_key", value="anchor value 123")
        assert (err.value.status, err.value.reason, err.value.message) == (400, "invalid_argument",
                                                                          "input value must be a json")

        wrote = await n1.call("dht_value_set", key="anchor_test_key", value='{"text": "anchor value 123"}')
        assert wrote["write"] == "success" and wrote["closest_nodes"]
        assert set(wrote["closest_nodes"][0]) == {"address", "dht_id"}
        read = await n2.call("dht_value_get", key="anchor_test_key")
        assert read == {"read": "success", "my_dht_id": n2.service.node.dht_id, "key": "anchor_test_key",
                        "value": {"text": "anchor value 123", "key": "anchor_test_key", "type": "skip_validation"}}
        missing = await n2.call("dht_value_get", key="no_such_key_xyz")
        assert missing["read"] == "failed" and missing["closest_nodes"] and "value" not in missing

        # Nickname written by the identity process's call, found from another node.
        await n1.internal("publish_nickname", nickname="node1", idurl="http://127.0.0.1:8084/node1.xml")
        found = await n2.call("user_search", nickname="node1")
        assert found["result"] == "exist" and found["idurl"] == "http://127.0.0.1:8084/node1.xml"
        assert found["global_id"] == "node1@127.0.0.1_8084" and found["position"] == "0"
        observed = await seed.call("user_observe", nickname="node1")
        assert [o["idurl"] for o in observed] == ["http://127.0.0.1:8084/node1.xml"]

        # A forged nickname record (signed by node2, claiming node1) is never returned as valid.
        data = records.complete_data("nickname", "forged:0",
                                     records.nickname_data("forged", 0, "http://127.0.0.1:8084/node1.xml"))
        env = records.make_envelope(0, "nickname", "forged:0", data, time.time() + 600, n2.service.node.dht_id)
        signed = await n2.client.call_internal(
            "identity", "sign", data=crypto.b64(records.record_signed_bytes(env)))
        env["signature"] = {"signer": "http://127.0.0.1:8084/node1.xml", "value": signed["signature"]}
        await n2.service.node.publish(env)
        forged = await seed.call("dht_value_get", key="forged:0", record_type="nickname")
        assert forged["read"] == "failed" and forged["reason"] == "invalid_signature" and "value" not in forged
        assert (await seed.call("user_search", nickname="forged"))["result"] == "not exist"

        # Suppliers record written by storage's verb, read by suppliers_list_dht.
        customer = "http://127.0.0.1:8084/node2.xml"
        await n2.internal("write_record", record_type="suppliers", key=customer, value={
            "customer_idurl": customer, "publisher_idurl": customer, "ecc_map": "ecc/2x2", "revision": 3,
            "suppliers": ["http://127.0.0.1:8084/node1.xml", "http://127.0.0.1:8084/node0.xml"]})
        listed = await n1.call("suppliers_list_dht", customer_id="node2@127.0.0.1_8084")
        assert set(listed) == {"customer_idurl", "ecc_map", "publisher_idurl", "revision", "suppliers", "timestamp"}
        assert listed["revision"] == 3 and listed["ecc_map"] == "ecc/2x2" and len(listed["suppliers"]) == 2
        nobody = await n1.call("suppliers_list_dht", customer_id="ghost@127.0.0.1_8084")
        assert nobody["suppliers"] == [] and nobody["revision"] is None

        # node1 runs a supplier: it is announced on the suppliers layer (3).
        users = await await_for(lambda: _users(n2, 3), timeout=15, what="supplier announced")
        assert users == ["http://127.0.0.1:8084/node1.xml"]
        # Attaching to one more layer (an option change) announces there and says so.
        n1.service.ctx.config.set("services/entangled-dht/attached-layers", "5")
        await n1.service.on_config_changed(["services/entangled-dht/attached-layers"])
        await await_for(lambda: _has_layer(events, 5), timeout=10, what="dht-layer-connected for layer 5")
        assert await _users(seed, 5) == ["http://127.0.0.1:8084/node1.xml"]
        assert len(await seed.call("dht_user_random", layer_id=0, count=5)) == 2
        assert (await n2.call("dht_node_find"))["closest_nodes"]

        dump = await seed.call("dht_local_db_dump")
        assert any(item["value"].get("text") == "anchor value 123" for item in dump["0"]
                   if isinstance(item["value"], dict))
        status = await n1.internal("status")
        layer0 = status["layers"][0]
        assert layer0["layer_id"] == 0 and layer0["contacts"] == 2 and layer0["packets_sent"] > 0
        assert {"active", "attached", "buckets", "data_store_items", "node_id", "rpc_calls"} <= set(layer0)
        assert next(la for la in status["layers"] if la["layer_id"] == 3)["attached"] is True
        stun = await n2.internal("stun")
        assert stun["ip"] == "127.0.0.1" and stun["port"] == n2.service.node.address[1]
        # From another local UDP port: the peer sees that port.
        spare = free_port(socket.SOCK_DGRAM)
        other = await n2.internal("stun", udp_port=spare)
        assert other["port"] == spare and other["local_port"] == spare
        # The seeds' STUN at a port nobody listens on: nobody answers.
        with pytest.raises(NodeError) as nobody:
            await n2.internal("stun", dht_port=free_port(socket.SOCK_DGRAM))
        assert nobody.value.reason == "dht_not_connected"
        await sub.unsubscribe()


async def test_values_survive_restarts_of_a_node_and_the_seed(tmp_path: Path):
    async with dht_network(tmp_path, 3) as (seed, n1, n2):
        await n1.call("dht_value_set", key="durable", value={"n": 1}, expire=600)
        await n1.stop_dht()
        await seed.stop_dht()
        await seed.start_dht()
        await n1.start_dht()
        await await_for(lambda: _connected(n1), timeout=15, what="node1 rejoined")
        await await_for(lambda: _connected(seed), timeout=15, what="seed rejoined")
        assert (await seed.call("dht_value_get", key="durable"))["value"]["n"] == 1
        assert (await n2.call("dht_value_get", key="durable"))["value"]["n"] == 1
        # The restarted node republished what it owns: a node that joins afterwards finds it too.
        assert (await n1.internal("read_record", record_type="skip_validation", key="durable"))["read"] == "success"


async def _has_layer(events: list[dict[str, Any]], layer_id: int) -> bool:
    return any((e.get("data") or {}).get("layer_id") == layer_id for e in events)


async def _users(node: Node, layer_id: int) -> list[str] | None:
    try:
        return list(await node.call("dht_user_random", layer_id=layer_id, count=3))
    except NodeError:
        return None


async def test_a_forged_record_from_the_future_never_blocks_the_genuine_one(tmp_path: Path):
    async with dht_network(tmp_path, 3) as nodes:
        seed, victim, attacker = nodes
        victim_idurl = "http://127.0.0.1:8084/node1.xml"
        # The attacker claims the victim's nickname: the victim's name as signer, its own signature,
        # and a `published` ten days ahead so that no genuine record could ever be newer.
        data = records.complete_data("nickname", "victim:0", records.nickname_data("victim", 0, victim_idurl))
        env = records.make_envelope(0, "nickname", "victim:0", data, time.time() + 3600,
                                    attacker.service.node.dht_id, published=time.time() + 10 * 86400)
        signed = await attacker.client.call_internal(
            "identity", "sign", data=crypto.b64(records.record_signed_bytes(env)))
        env["signature"] = {"signer": victim_idurl, "value": signed["signature"]}
        dkey = records.storage_key(0, "nickname", "victim:0")
        protocol = attacker.service.node.protocol
        for target in (seed, victim):
            peer = DhtPeer(target.service.node.node.id, *target.service.node.address)
            ok, accepted = await protocol.call_store(peer, dkey, records.canonical(env))
            assert ok and accepted is False
        # The same forgery with an honest `published` is refused for its signature.
        env["published"] = time.time()
        peer = DhtPeer(seed.service.node.node.id, *seed.service.node.address)
        assert (await protocol.call_store(peer, dkey, records.canonical(env)))[1] is False
        refused = seed.service.node.protocol.stats.refused
        assert refused["published_in_future"] >= 1 and refused["invalid_signature"] >= 1

        await victim.internal("publish_nickname", nickname="victim", idurl=victim_idurl)
        found = await seed.call("user_search", nickname="victim")
        assert found["result"] == "exist" and found["idurl"] == victim_idurl


async def _revision_at(node: Node, customer: str) -> int | None:
    read = await node.internal("read_record", record_type="suppliers", key=customer)
    return int(read["value"]["revision"]) if read["read"] == "success" else None


async def test_an_old_record_replayed_stamped_ahead_never_beats_the_newer_one(tmp_path: Path):
    """A peer keeps an old genuine suppliers record and stores it again, restamped 5 minutes ahead."""
    async with dht_network(tmp_path, 3) as nodes:
        seed, victim, attacker = nodes
        customer = "http://127.0.0.1:8084/node1.xml"
        dkey = records.storage_key(0, "suppliers", customer)

        async def write(revision: int, supplier: str) -> None:
            await victim.internal("write_record", record_type="suppliers", key=customer, value={
                "customer_idurl": customer, "ecc_map": "ecc/2x2", "revision": revision, "suppliers": [supplier]})

        await write(1, "http://127.0.0.1:8084/fired.xml")
        assert attacker.service is not None
        store = attacker.service.node.store
        old_text = await await_for(lambda: _held(store, dkey), timeout=10, what="the attacker holds revision 1")
        await write(2, "http://127.0.0.1:8084/hired.xml")
        for node in (seed, victim):
            await await_for(lambda n=node: _is(_revision_at(n, customer), 2), timeout=10, what="revision 2 stored")

        protocol = attacker.service.node.protocol
        replayed = codec.loads(old_text)
        assert replayed["data"]["revision"] == 1
        as_it_was = records.canonical(replayed)
        replayed["published"] = time.time() + 300  # within the clock skew storing nodes allow
        restamped = records.canonical(replayed)
        for node in (seed, victim):
            peer = DhtPeer(node.service.node.node.id, *node.service.node.address)
            for text in (as_it_was, restamped):
                ok, accepted = await protocol.call_store(peer, dkey, text)
                assert ok and accepted is False
        for node in (seed, victim):
            assert await _revision_at(node, customer) == 2
        assert seed.service.node.protocol.stats.refused["invalid_signature"] >= 1

        # The owner's next write is never refused because of the replay.
        await write(3, "http://127.0.0.1:8084/hired-too.xml")
        await await_for(lambda: _is(_revision_at(seed, customer), 3), timeout=10, what="revision 3 at the seed")


async def _held(store: Any, dkey: bytes) -> str | None:
    return store.get(dkey)


async def _is(found: Any, wanted: Any) -> bool:
    return bool(await found == wanted)


async def _pinged_back(storer: Node, member: Node) -> bool:
    # A storing node pings an announcing member back; before the fix there was no such thing.
    # (vars(): rpcudp turns a missing attribute into a remote call.)
    assert storer.service is not None and member.service is not None
    standing = vars(storer.service.node.protocol).get("standing")
    return standing is None or standing.answered_at(member.service.node.dht_id) is not None


async def _bucket_holds(storer: Node, layer_id: int, idurl: str) -> bool:
    assert storer.service is not None
    held = storer.service.node.store.envelope(members.bucket_dkey(layer_id, members.bucket_of(idurl)))
    return held is not None and idurl in {e["idurl"] for e in members.entries(held)}


async def test_a_flood_of_minted_members_leaves_the_announced_supplier_in_place(tmp_path: Path):
    """node2 mints 40 identities (its identity server serves them all with its own key) in the bucket
    of the supplier node1, stamps them as far ahead as storing nodes allow, and stores them at the
    seed and at node1, the nodes that hold that bucket."""
    async with dht_network(tmp_path, 3) as nodes:
        seed, supplier, attacker = nodes
        supplier_idurl = "http://127.0.0.1:8084/node1.xml"
        for storer in (seed, supplier):
            await await_for(lambda s=storer: _bucket_holds(s, 3, supplier_idurl), timeout=15,
                            what="the supplier announced")
        await await_for(lambda: _pinged_back(seed, supplier), timeout=10, what="the seed pinged node1 back")
        assert attacker.service is not None and attacker.service.node.address is not None
        bucket = members.bucket_of(supplier_idurl)
        fresh_names = (f"http://evil.example:8084/m{i}.xml" for i in range(10_000))
        minted = [u for u in fresh_names if members.bucket_of(u) == bucket][:40]
        attacker_identity = "http://127.0.0.1:8084/node2.xml"
        registry = attacker.registry
        ahead = int(time.time()) + records.MAX_CLOCK_SKEW - 10
        flood = []
        for idurl in minted:
            registry[idurl] = registry[attacker_identity]
            entry = members.new_entry(idurl, attacker.service.node.dht_id,
                                      f"127.0.0.1:{attacker.service.node.address[1]}", ahead, members.MAX_MEMBER_TTL)
            signed = await attacker.client.call_internal("identity", "sign",
                                                         data=crypto.b64(members.signed_bytes(3, entry)))
            entry["signature"] = signed["signature"]
            flood.append(entry)
        protocol = attacker.service.node.protocol
        dkey = members.bucket_dkey(3, bucket)
        for storer in (seed, supplier):
            assert storer.service is not None
            peer = DhtPeer(storer.service.node.node.id, *storer.service.node.address)
            for start in range(0, len(flood), members.MAX_STORE_CHECKS):
                env = records.make_envelope(3, records.LAYER_MEMBERS, members.bucket_key(bucket),
                                            {"members": flood[start:start + members.MAX_STORE_CHECKS]},
                                            time.time() + 300, attacker.service.node.dht_id)
                ok, accepted = await protocol.call_store(peer, dkey, records.canonical(env))
                assert ok and accepted is True
            held = storer.service.node.store.envelope(dkey)
            assert held is not None
            kept = {e["idurl"] for e in members.entries(held)}
            assert len(kept & set(minted)) >= 5  # the flood was taken in: the bucket is full
            assert supplier_idurl in kept, f"the supplier was pushed out at {storer.name}"
        assert supplier_idurl in (await seed.call("dht_user_random", layer_id=3, count=50))

