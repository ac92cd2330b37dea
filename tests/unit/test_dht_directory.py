"""Signed records, nicknames and layer members over a few in-process nodes on loopback UDP."""

from __future__ import annotations

import time
from typing import Any

import pytest

from common import crypto
from common.errors import InvalidArgumentError, NodeError, NotFoundError
from services.dht import records
from services.dht.directory import Directory
from services.dht.node import DhtNode
from services.dht.storage import DhtStore


class FakeIdentity:
    """An `IdentityClient` with a real 1024-bit key and a shared directory of public keys."""

    def __init__(self, name: str, registry: dict[str, str]):
        self.key = crypto.generate_private_key(1024)
        self.idurl = f"http://127.0.0.1:8084/{name}.xml"
        self.registry = registry
        registry[self.idurl] = crypto.public_key_to_ssh(self.key.public_key())

    async def sign(self, data: bytes) -> dict[str, Any]:
        return {"signature": crypto.b64(crypto.sign(self.key, data)), "key_id": "master$x"}

    async def my_identity(self) -> dict[str, Any]:
        return {"idurl": self.idurl, "global_id": records.global_id_from_idurl(self.idurl)}

    async def fetch(self, idurl: str) -> dict[str, Any]:
        if idurl not in self.registry:
            raise NotFoundError("unknown identity", reason="identity_not_found")
        return {"publickey": self.registry[idurl]}


@pytest.fixture
async def network():
    registry: dict[str, str] = {}
    members = []
    for name in ("alice", "bob", "carol", "dave"):
        node = DhtNode(DhtStore(":memory:"), rpc_timeout=1.0)
        await node.listen(0)
        members.append(Directory(node, FakeIdentity(name, registry)))
    for d in members[1:]:
        assert await d.node.bootstrap([members[0].node.address])
    yield members
    for d in members:
        d.node.stop()


async def test_general_value_written_on_one_is_read_on_another(network):
    alice, _, _, dave = network
    reply = await alice.write("skip_validation", "anchor_test_key", {"text": "anchor value 123"})
    assert reply["write"] == "success" and reply["closest_nodes"]
    assert reply["value"] == {"text": "anchor value 123", "key": "anchor_test_key", "type": "skip_validation"}
    found = await dave.read("skip_validation", "anchor_test_key")
    assert found.ok and found.data["text"] == "anchor value 123"
    other_layer = await dave.read("skip_validation", "anchor_test_key", layer_id=3)
    assert not other_layer.ok and other_layer.closest


async def test_signed_record_verifies_and_forgery_is_refused(network):
    alice, bob, carol, dave = network
    me = alice.identity.idurl
    await alice.write("nickname", "alice:0", records.nickname_data("alice", 0, me))
    assert (await dave.read("nickname", "alice:0")).data["idurl"] == me

    # Bob signs a nickname record that claims to be Alice's: refused when writing...
    with pytest.raises(InvalidArgumentError) as err:
        await bob.write("nickname", "eve:0", records.nickname_data("eve", 0, me))
    assert err.value.reason == "not_record_owner"

    # ...and when he stores it straight into the DHT, readers reject it.
    data = records.complete_data("nickname", "eve:0", records.nickname_data("eve", 0, me))
    forged_sig = await bob.identity.sign(records.signed_bytes(0, "nickname", "eve:0", data))
    forged = records.make_envelope(0, "nickname", "eve:0", data, time.time() + 60, bob.node.dht_id,
                                   signature={"signer": me, "value": forged_sig["signature"]})
    await bob.node.publish(forged)
    outcome = await carol.read("nickname", "eve:0")
    assert not outcome.ok
    assert outcome.reason == "invalid_signature" and "signature" in outcome.error

    # An unsigned record of a signed kind is refused too.
    unsigned = records.make_envelope(0, "nickname", "zed:0", dict(data, key="zed:0"), time.time() + 60, "00" * 20)
    await bob.node.publish(unsigned)
    assert (await carol.read("nickname", "zed:0")).reason == "invalid_signature"

    # A stranger cannot overwrite Alice's genuine record at the storing nodes.
    genuine = records.storage_key(0, "nickname", "alice:0")
    take_over = records.make_envelope(0, "nickname", "alice:0", {"junk": 1}, time.time() + 60, bob.node.dht_id)
    accepted, _ = await bob.node.store_value(genuine, records.encode_envelope(take_over))
    assert accepted == []
    assert (await dave.read("nickname", "alice:0")).ok


async def test_nicknames_take_positions_and_are_found(network):
    alice, bob, carol, _ = network
    first = await alice.publish_nickname("sam", alice.identity.idurl)
    second = await bob.publish_nickname("sam", bob.identity.idurl)
    again = await alice.publish_nickname("sam", alice.identity.idurl)
    assert (first["position"], second["position"], again["position"]) == (0, 1, 0)
    found = await carol.search_nickname("sam")
    assert found == {"result": "exist", "nickname": "sam", "idurl": alice.identity.idurl,
                     "global_id": "alice@127.0.0.1_8084", "position": "0"}
    observed = await carol.observe_nickname("sam", attempts=1)
    assert [u["idurl"] for u in observed] == [alice.identity.idurl, bob.identity.idurl]
    missing = await carol.search_nickname("nosuchuser")
    assert missing == {"result": "not exist", "nickname": "nosuchuser", "idurl": "", "global_id": "",
                       "position": -1}


async def test_layer_members_are_discovered(network):
    alice, bob, carol, dave = network
    assert await bob.announce(3, bob.identity.idurl)
    assert await carol.announce(3, carol.identity.idurl)
    found = await dave.random_users(3, 5)
    assert sorted(found) == sorted([bob.identity.idurl, carol.identity.idurl])
    assert await alice.random_users(3, 1, exclude=bob.identity.idurl) == [carol.identity.idurl]
    with pytest.raises(NodeError) as err:
        await dave.random_users(7, 1)
    assert err.value.reason == "users_not_found"
