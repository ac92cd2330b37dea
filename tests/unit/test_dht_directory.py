"""Signed records, nicknames and layer members over a few in-process nodes on loopback UDP."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from kademlia.node import Node

from common import crypto
from common.errors import InvalidArgumentError, NodeError, NotFoundError, UnavailableError
from services.dht import members, records
from services.dht.directory import Directory
from services.dht.protocol import MAX_SOURCES, CheckBudget, CheckBudgets
from services.dht.node import DhtNode
from services.dht.storage import DhtStore
from tests.helpers import await_for


class FakeIdentity:
    """An `IdentityClient` with a real 1024-bit key and a shared directory of public keys."""

    def __init__(self, name: str, registry: dict[str, str]):
        self.key = crypto.generate_private_key(1024)
        self.idurl = f"http://127.0.0.1:8084/{name}.xml"
        self.registry = registry
        registry[self.idurl] = crypto.public_key_to_ssh(self.key.public_key())
        self.fetched: list[str] = []

    async def sign(self, data: bytes) -> dict[str, Any]:
        return {"signature": crypto.b64(crypto.sign(self.key, data)), "key_id": "master$x"}

    async def my_identity(self) -> dict[str, Any]:
        return {"idurl": self.idurl, "global_id": records.global_id_from_idurl(self.idurl)}

    async def fetch(self, idurl: str) -> dict[str, Any]:
        self.fetched.append(idurl)
        if idurl not in self.registry:
            raise NotFoundError("unknown identity", reason="identity_not_found")
        return {"publickey": self.registry[idurl]}


@pytest.fixture
async def network():
    registry: dict[str, str] = {}
    directories = []
    for name in ("alice", "bob", "carol", "dave"):
        node = DhtNode(DhtStore(":memory:"), rpc_timeout=1.0)
        directory = Directory(node, FakeIdentity(name, registry))
        node.verifier = directory.verify_envelope  # as the dht service wires it
        await node.listen(0)
        directories.append(directory)
    for d in directories[1:]:
        assert await d.node.bootstrap([directories[0].node.address])
    yield directories
    for d in directories:
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
    forged = records.make_envelope(0, "nickname", "eve:0", data, time.time() + 60, bob.node.dht_id)
    forged_sig = await bob.identity.sign(records.record_signed_bytes(forged))
    forged["signature"] = {"signer": me, "value": forged_sig["signature"]}
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


async def test_a_renewed_record_is_signed_again_with_its_new_times(network):
    alice, _, carol, _ = network
    me = alice.identity.idurl
    await alice.write("nickname", "renew:0", records.nickname_data("renew", 0, me))
    dkey = records.storage_key(0, "nickname", "renew:0")
    first = carol.node.get_local(dkey)
    assert first is not None
    # Restamping by hand breaks the owner's signature: both times are signed.
    with pytest.raises(records.RecordError):
        await carol.verify(dict(first, published=first["published"] + 1), "nickname", "renew:0", 0)
    with pytest.raises(records.RecordError):
        await carol.verify(dict(first, expire_at=first["expire_at"] + 1), "nickname", "renew:0", 0)
    assert await alice.node.republish(alice.renewed) == 1
    renewed = carol.node.get_local(dkey)
    assert renewed is not None and renewed["published"] > first["published"]
    await carol.verify(renewed, "nickname", "renew:0", 0)
    # A record that would outlive the longest lifetime cannot be shortened by a storing node: refused.
    long_lived = dict(renewed, expire_at=renewed["published"] + records.MAX_EXPIRE + 1)
    with pytest.raises(records.RecordError) as err:
        records.check_lifetime(long_lived)
    assert err.value.reason == "invalid_lifetime"
    assert not carol.node.proto.accept_value(dkey, records.canonical(long_lived))


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


async def test_a_squatted_nickname_position_resolves_to_the_claim_most_nodes_hold(network):
    alice, bob, carol, dave = network
    await alice.write("nickname", "sam:0", records.nickname_data("sam", 0, alice.identity.idurl))
    dkey = records.storage_key(0, "nickname", "sam:0")
    # Bob claims the same position, signed by himself (a valid record of his own), later than Alice.
    now = time.time()
    squat = records.make_envelope(0, "nickname", "sam:0",
                                  records.complete_data("nickname", "sam:0",
                                                        records.nickname_data("sam", 0, bob.identity.idurl)),
                                  now + 3600, bob.node.dht_id, published=now)
    squat = await bob._signed(squat, bob.identity.idurl)
    # Nodes holding Alice's claim refuse his; Dave missed Alice's write and took Bob's.
    assert not carol.node.proto.accept_value(dkey, records.canonical(squat))
    dave.node.store.delete(dkey)
    assert dave.node.proto.accept_value(dkey, records.canonical(squat))
    for reader in (dave, carol, bob):
        found = await reader.read("nickname", "sam:0")
        assert found.ok and found.data["idurl"] == alice.identity.idurl, reader.identity.idurl
    assert (await dave.search_nickname("sam"))["idurl"] == alice.identity.idurl


async def test_a_nickname_read_does_not_wait_for_a_dead_contact_once_the_others_agree(network):
    alice, bob, carol, dave = network
    await alice.write("nickname", "kim:0", records.nickname_data("kim", 0, alice.identity.idurl))
    dave.node.stop()  # still in everyone's routing table; it will never answer
    found = await carol.read("nickname", "kim:0")
    assert found.ok and found.data["idurl"] == alice.identity.idurl
    assert carol.node._asking, "the read waited for the dead contact's ask to time out"


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


def _entry(layer: int, idurl: str, signer: FakeIdentity, published: float | None = None, **over: Any) -> dict:
    """A member entry for `idurl` signed by `signer`'s key (a forgery unless `signer` is `idurl`)."""
    entry = members.new_entry(idurl, "ee" * 20, "10.6.6.6:666", int(published or time.time()), 300)
    entry["signature"] = crypto.b64(crypto.sign(signer.key, members.signed_bytes(layer, entry)))
    entry.update(over)
    return entry


def _fake_idurls(bucket: int) -> Any:
    names = (f"http://127.0.0.1:8084/fake{i}.xml" for i in itertools.count())
    return (u for u in names if members.bucket_of(u) == bucket)


async def _store(sender: Directory, target: Directory, layer: int, found: list[dict]) -> Any:
    """STORE a bucket of `found` (all of one bucket) straight to `target`'s UDP port; its answer."""
    bucket = members.bucket_of(found[0]["idurl"])
    env = records.make_envelope(layer, records.LAYER_MEMBERS, members.bucket_key(bucket), {"members": found},
                                time.time() + 300, sender.node.dht_id)
    peer = Node(target.node.node.id, *target.node.address)
    ok, answer = await sender.node.proto.call_store(peer, members.bucket_dkey(layer, bucket), records.canonical(env))
    assert ok
    return answer


async def test_a_store_of_forged_member_entries_is_refused(network):
    alice, bob, _, dave = network
    victim = bob.identity.idurl
    bucket = members.bucket_of(victim)
    genuine = _entry(3, victim, bob.identity)
    forged = [
        _entry(3, next(_fake_idurls(bucket)), dave.identity),  # nobody: no identity to check it against
        _entry(3, victim, dave.identity, published=time.time() + 60),  # bob's name, dave's signature
        dict(genuine, address="10.6.6.6:1"),  # bob's signature, another address
        dict(genuine, expire_at=genuine["expire_at"] + 10**6),  # bob's signature, a longer life
    ]
    for entry in forged:
        assert await _store(dave, alice, 3, [entry]) is False
    assert alice.node.proto.stats.refused["invalid_signature"] == len(forged)
    assert alice.node.get_local(members.bucket_dkey(3, bucket)) is None

    # A STORE mixing a genuine entry with forgeries keeps the genuine one only.
    assert await _store(dave, alice, 3, forged + [genuine]) is True
    held = alice.node.get_local(members.bucket_dkey(3, bucket))
    assert held is not None and members.entries(held) == [genuine]
    assert (await alice.members(3)) == {victim: genuine}


async def test_a_storing_node_checks_few_new_entries_per_store(network):
    alice, _, _, dave = network
    fakes = [_entry(3, u, dave.identity) for u in itertools.islice(_fake_idurls(0), 3 * members.MAX_STORE_CHECKS)]
    assert await _store(dave, alice, 3, fakes) is False
    assert len(alice.identity.fetched) == members.MAX_STORE_CHECKS
    # Failed checks are remembered: the same flood again costs no identity fetch.
    assert await _store(dave, alice, 3, fakes[:members.MAX_STORE_CHECKS]) is False
    assert len(alice.identity.fetched) == members.MAX_STORE_CHECKS


async def test_readers_drop_entries_planted_on_a_hostile_storing_node(network):
    alice, bob, carol, dave = network
    assert await bob.announce(3, bob.identity.idurl)
    bucket = members.bucket_of(bob.identity.idurl)
    genuine = members.entries(bob.node.get_local(members.bucket_dkey(3, bucket)))[0]
    # Carol is hostile: she holds forgeries in every bucket, and a newer copy of bob's entry.
    for b in range(members.MEMBER_BUCKETS):
        planted = [_entry(3, u, dave.identity) for u in itertools.islice(_fake_idurls(b), 3)]
        if b == bucket:
            planted.append(dict(genuine, address="10.6.6.6:1", published=genuine["published"] + 1))
        env = records.make_envelope(3, records.LAYER_MEMBERS, members.bucket_key(b), {"members": planted},
                                    time.time() + 300, carol.node.dht_id)
        carol.node.store.put(members.bucket_dkey(3, b), env, records.canonical(env))
    found = await alice.members(3)
    assert found == {bob.identity.idurl: genuine}
    assert await dave.random_users(3, 10) == [bob.identity.idurl]
    assert alice.known_members[3] == 1


async def test_an_announcement_that_cannot_be_signed_is_not_sent(network):
    _, bob, carol, _ = network

    async def cannot_sign(data: bytes) -> dict[str, Any]:
        raise UnavailableError("identity process is down", reason="unavailable")

    bob.identity.sign = cannot_sign  # type: ignore[method-assign]
    assert await bob.announce(3, bob.identity.idurl) is False
    with pytest.raises(NotFoundError):
        await carol.random_users(3, 1)


async def test_the_owner_key_cache_is_bounded(monkeypatch):
    monkeypatch.setattr("services.dht.directory.MAX_KEYS", 3)
    registry: dict[str, str] = {}
    identity = FakeIdentity("alice", registry)
    for name in ("u1", "u2", "u3", "u4", "u5"):
        registry[f"http://127.0.0.1:8084/{name}.xml"] = registry[identity.idurl]
    directory = Directory(DhtNode(DhtStore(":memory:")), identity)
    for name in ("u1", "u2", "u3", "u4", "u5"):
        await directory._public_key(f"http://127.0.0.1:8084/{name}.xml")
    assert [idurl.rsplit("/", 1)[1] for idurl in directory._keys] == ["u3.xml", "u4.xml", "u5.xml"]


def test_the_check_budget_refills_at_its_rate_up_to_its_burst():
    now = [100.0]
    budget = CheckBudget(rate=2.0, burst=3, clock=lambda: now[0])
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 1.0  # two tokens back
    assert [budget.take() for _ in range(3)] == [True, True, False]
    now[0] += 60.0  # never more than the burst
    assert sum(budget.take() for _ in range(10)) == 3


async def test_signed_stores_beyond_the_check_budget_are_refused_as_busy(network):
    alice, bob, _, _ = network
    protocol = bob.node.protocol
    assert protocol is not None
    protocol.check_budget = CheckBudgets(CheckBudget(rate=0.0, burst=2))
    held_before = bob.node.store.count(0)
    me = alice.identity.idurl
    for i in range(4):  # four nodes: every one of them is among each key's closest
        await alice.write("nickname", f"alice{i}:0", records.nickname_data(f"alice{i}", 0, me))
    assert protocol.stats.refused["busy"] == 2
    assert bob.node.store.count(0) == held_before + 2


def test_one_source_cannot_spend_the_whole_budget_and_forgotten_sources_stay_bounded():
    now = [0.0]
    budgets = CheckBudgets(CheckBudget(rate=0.0, burst=10, clock=lambda: now[0]), rate=0.0, burst=3,
                           clock=lambda: now[0])
    assert [budgets.take("10.0.0.1") for _ in range(5)] == [True, True, True, False, False]
    assert [budgets.take("10.0.0.2") for _ in range(3)] == [True, True, True]  # its own three
    assert sum(budgets.take(f"10.1.{i // 256}.{i % 256}") for i in range(10)) == 4  # the total: 10 in all
    for i in range(MAX_SOURCES + 10):
        budgets.take(f"10.2.{i // 256}.{i % 256}")
    assert budgets.sources == MAX_SOURCES


async def _answered_by(storer: Directory, member: Directory) -> bool:
    # The storing node pings an announcing member back; before the fix there was no such thing.
    # (vars(): rpcudp turns a missing attribute into a remote call.)
    standing = vars(storer.node.proto).get("standing")
    return standing is None or standing.answered_at(member.node.dht_id) is not None


async def test_a_flood_of_minted_members_cannot_push_an_announced_member_out(network):
    """Dave mints 40 identities on one identity server of his, all in Bob's bucket, stamped as far
    ahead as storing nodes allow, and stores them at every node that holds the bucket."""
    alice, bob, carol, dave = network
    assert await bob.announce(3, bob.identity.idurl)
    bucket = members.bucket_of(bob.identity.idurl)
    storers = (alice, bob, carol)
    for storer in storers:
        await await_for(lambda s=storer: _answered_by(s, bob), timeout=10, what="bob pinged back")
    names = (f"http://evil.example:8084/m{i}.xml" for i in itertools.count())
    minted = list(itertools.islice((u for u in names if members.bucket_of(u) == bucket), 40))
    for idurl in minted:  # cheap identities: one key, served by the attacker's identity server
        dave.identity.registry[idurl] = dave.identity.registry[dave.identity.idurl]
    ahead = int(time.time()) + records.MAX_CLOCK_SKEW - 10
    flood = []
    for idurl in minted:
        entry = members.new_entry(idurl, dave.node.dht_id, f"127.0.0.1:{dave.node.address[1]}", ahead,
                                  members.MAX_MEMBER_TTL)
        entry["signature"] = crypto.b64(crypto.sign(dave.identity.key, members.signed_bytes(3, entry)))
        flood.append(entry)
    for storer in storers:
        for start in range(0, len(flood), members.MAX_STORE_CHECKS):
            assert await _store(dave, storer, 3, flood[start:start + members.MAX_STORE_CHECKS]) is True
        held = storer.node.get_local(members.bucket_dkey(3, bucket))
        assert held is not None
        kept = {e["idurl"] for e in members.entries(held)}
        assert len(kept & set(minted)) >= 5  # the flood was taken in: the bucket is full
        assert bob.identity.idurl in kept, f"bob pushed out at {storer.identity.idurl}"
    found = await alice.members(3)
    assert bob.identity.idurl in found
