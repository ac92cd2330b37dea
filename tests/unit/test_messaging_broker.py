"""Brokers and members in one process over a fake network: order, dedupe, failover, membership."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from common import crypto
from common.errors import UnavailableError
from services.messaging import envelope
from services.messaging.broker import Broker, request
from services.messaging.group_store import GroupStore
from services.messaging.groups import Groups
from services.messaging.membership import cert_payload, proof_payload
from services.messaging.queue_store import QueueStore
from services.messaging.store import MessageStore, StoredMessage
from tests.unit.sealing import open_with, seal

CREATOR = "http://127.0.0.1:8084/alice.xml"
BOB = "http://127.0.0.1:8084/bob.xml"
CAROL = "http://127.0.0.1:8084/carol.xml"
EVE = "http://127.0.0.1:8084/eve.xml"
B0 = "http://127.0.0.1:8084/broker0.xml"
B1 = "http://127.0.0.1:8084/broker1.xml"
B2 = "http://127.0.0.1:8084/broker2.xml"
GROUP = "group_0123456789abcdef$alice@127.0.0.1_8084"


class World:
    """Every node of the fake network: brokers by IDURL, keys, which nodes are down."""

    def __init__(self) -> None:
        self.master = crypto.generate_private_key(1024)
        self.group_key = crypto.generate_private_key(1024)
        self.public = crypto.public_key_to_ssh(self.group_key.public_key())
        self.cert = crypto.b64(crypto.sign(self.master, cert_payload(GROUP, self.public)))
        self.brokers: dict[str, Broker] = {}
        self.hired: list[tuple[int, str]] = []
        self.down: set[str] = set()
        self.requests: list[tuple[str, str, str]] = []
        self.masters: dict[str, Any] = {CREATOR: self.master}

    def master_of(self, idurl: str) -> Any:
        """Every node's master key (made the first time it is needed)."""
        if idurl not in self.masters:
            self.masters[idurl] = crypto.generate_private_key(1024)
        return self.masters[idurl]


class Net:
    """One node's view of the world (the BrokerNet and GroupsNet protocols)."""

    def __init__(self, world: World, me: str, holds_key: bool = True):
        self.world = world
        self.me = me
        self.holds_key = holds_key

    async def my_idurl(self) -> str | None:
        return self.me

    async def brokers(self, creator: str, refresh: bool = False) -> list[tuple[int, str]]:
        return list(self.world.hired) if creator == CREATOR else []

    async def request(self, idurl: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.world.requests.append((self.me, idurl, str(payload.get("queue"))))
        if idurl in self.world.down or idurl not in self.world.brokers:
            raise UnavailableError(f"{idurl} is down", reason="unavailable")
        return await self.world.brokers[idurl].handle(self.me, copy.deepcopy(payload))

    async def verify_signature(self, idurl: str, data: bytes, signature: str) -> bool:
        return idurl == CREATOR and crypto.verify(self.world.master.public_key(), data, crypto.unb64(signature))

    async def group_key(self, key_id: str) -> dict[str, Any]:
        return {"public": self.world.public, "signature": self.world.cert}

    async def sign_with(self, key_id: str | None, data: bytes) -> str:
        if key_id is None:
            return crypto.b64(crypto.sign(self.world.master_of(self.me), data))
        key = self.world.group_key if self.holds_key else crypto.generate_private_key(1024)
        return crypto.b64(crypto.sign(key, data))

    async def public_key(self, idurl: str, refresh: bool = False) -> str:
        return crypto.public_key_to_ssh(self.world.master_of(idurl).public_key())

    async def seal(self, public_key: str, header: envelope.Header, data: dict[str, Any]) -> dict[str, Any]:
        return seal(header, data, public_key)

    async def open(self, sealed: envelope.Sealed, key_id: str | None = None) -> bytes:
        return open_with(self.world.group_key, sealed)

    async def random_brokers(self, count: int) -> list[str]:
        return [B0, B1][:count]

    async def publish_broker(self, creator: str, position: int, broker: str) -> None:
        self.world.hired = sorted([h for h in self.world.hired if h[0] != position] + [(position, broker)])


def _broker(world: World, tmp_path: Path, idurl: str) -> Broker:
    broker = Broker(QueueStore(tmp_path / f"{idurl.rsplit('/', 1)[1]}.sqlite"), Net(world, idurl))
    world.brokers[idurl] = broker
    return broker


class Member:
    def __init__(self, world: World, tmp_path: Path, idurl: str, holds_key: bool = True):
        name = idurl.rsplit("/", 1)[1]
        self.history = MessageStore(tmp_path / f"{name}-messages.sqlite")
        self.seen: list[StoredMessage] = []
        self.groups = Groups(GroupStore(tmp_path / f"{name}-groups.sqlite"), self.history, Net(world, idurl, holds_key),
                             self._new)

    async def _new(self, message: StoredMessage) -> bool:
        self.seen.append(message)
        return True

    def ids(self) -> list[str]:
        return [m.data["text"] for m in self.history.history(GROUP, arrival_order=True, limit=1000)]


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = World()
    _broker(world, tmp_path, B0)
    _broker(world, tmp_path, B1)
    return world


async def _joined(world: World, tmp_path: Path, *idurls: str) -> list[Member]:
    members = [Member(world, tmp_path, idurl) for idurl in idurls]
    for member in members:
        member.groups.store.upsert(GROUP, "friends", CREATOR, 1.0)
        member.groups.store.set_joined(GROUP, True, 1.0)
    return members


async def test_creator_hires_and_every_member_gets_one_order(world: World, tmp_path: Path):
    alice, bob, carol = await _joined(world, tmp_path, CREATOR, BOB, CAROL)
    hired = await alice.groups.ensure_brokers(CREATOR, 2)
    assert hired == [(0, B0), (1, B1)]
    for n in range(6):
        sender = (alice, bob)[n % 2]
        result = await sender.groups.send(GROUP, {"text": f"m-{n}"})
        assert result["sequence_id"] == n and result["position"] == 0
    for member in (alice, bob, carol):
        await member.groups._poll(GROUP, wait=0)
        assert member.ids() == [f"m-{n}" for n in range(6)]
        assert member.groups.store.get(GROUP).last_seq == 5  # type: ignore[union-attr]
    # The replica holds everything the active broker acknowledged.
    assert [e.message_id for e in world.brokers[B1].store.tail(GROUP, -1)] == \
        [e.message_id for e in world.brokers[B0].store.tail(GROUP, -1)]
    # Own messages come back as outgoing, others' as incoming.
    assert {m.direction for m in bob.seen if m.sender == BOB} == {"out"}
    assert {m.direction for m in bob.seen if m.sender == CREATOR} == {"in"}
    # The broker only ever saw ciphertext.
    assert all("m-0" not in str(e.sealed) for e in world.brokers[B0].store.tail(GROUP, -1))


async def test_replays_and_resends_are_not_shown_twice(world: World, tmp_path: Path):
    alice, bob = await _joined(world, tmp_path, CREATOR, BOB)
    await alice.groups.ensure_brokers(CREATOR, 2)
    await alice.groups.send(GROUP, {"text": "once"})
    await bob.groups._poll(GROUP, wait=0)
    entries = [e.wire() for e in world.brokers[B0].store.tail(GROUP, -1)]
    assert await bob.groups.consume(GROUP, entries) == 0  # a replayed batch
    assert bob.groups.dropped["replayed"] == 1 and bob.ids() == ["once"] and len(bob.seen) == 1
    # A producer that missed the Ack resends the same message: acknowledged with its first number.
    cert, proof, _ = await alice.groups.credentials(GROUP)
    sealed = entries[0]["sealed"]
    again = await world.brokers[B0].handle(CREATOR, request("produce", GROUP, cert=cert, proof=proof, sealed=sealed))
    assert again["payload"]["seq"] == 0 and again["payload"]["duplicate"] is True
    assert world.brokers[B0].store.last_seq(GROUP) == 0


async def test_non_members_and_forged_senders_are_dropped_and_counted(world: World, tmp_path: Path):
    alice, = await _joined(world, tmp_path, CREATOR)
    await alice.groups.ensure_brokers(CREATOR, 2)
    await alice.groups.send(GROUP, {"text": "hi"})
    cert, proof, _ = await alice.groups.credentials(GROUP)
    broker = world.brokers[B0]
    # Eve has no group key: her proof is made with another key.
    eve = Member(world, tmp_path, EVE, holds_key=False)
    eve.groups.store.upsert(GROUP, "", CREATOR, 1.0)
    eve.groups.store.set_joined(GROUP, True, 1.0)
    with pytest.raises(Exception) as refused:
        await eve.groups.send(GROUP, {"text": "spam"})
    assert getattr(refused.value, "reason", "") == "group_not_member"
    assert broker.dropped["not_member"] == 1
    # Alice's proof replayed by Eve does not name Eve.
    header = envelope.Header("group_message", "group_1", EVE, GROUP, 1.0)
    sealed = seal(header, {"text": "x"}, world.public)
    reply = await broker.handle(EVE, request("produce", GROUP, cert=cert, proof=proof, sealed=sealed))
    assert reply["command"] == "Fail" and broker.dropped["not_member"] == 2
    # A member claiming someone else's message.
    header = envelope.Header("group_message", "group_2", BOB, GROUP, 1.0)
    sealed = seal(header, {"text": "x"}, world.public)
    reply = await broker.handle(CREATOR, request("produce", GROUP, cert=cert, proof=proof, sealed=sealed))
    assert reply["payload"]["reason"] == "forged_sender"
    # A certificate not signed by the creator.
    fresh = Broker(QueueStore(tmp_path / "fresh.sqlite"), Net(world, B0))
    reply = await fresh.handle(CREATOR, request("fetch", GROUP, cert={"public": world.public, "signature": proof},
                                                proof=proof, after=-1))
    assert reply["payload"]["reason"] == "bad_certificate"
    # Only brokers of the group may replicate into it.
    reply = await broker.handle(EVE, request("replicate", GROUP, cert=cert, position=0, entries=[]))
    assert reply["payload"]["reason"] == "not_broker"
    assert broker.store.last_seq(GROUP) == 0


async def test_failover_loses_and_doubles_nothing(world: World, tmp_path: Path):
    alice, bob = await _joined(world, tmp_path, CREATOR, BOB)
    await alice.groups.ensure_brokers(CREATOR, 2)
    for n in range(3):
        await alice.groups.send(GROUP, {"text": f"a{n}"})
    await bob.groups._poll(GROUP, wait=0)
    world.down.add(B0)  # the active broker dies
    for n in range(3):
        result = await alice.groups.send(GROUP, {"text": f"b{n}"})
        assert result["position"] == 1 and result["sequence_id"] == 3 + n
    await bob.groups._poll(GROUP, wait=0)
    assert bob.groups.members[GROUP].active_broker == B1
    # B0 comes back with a new process (its queue as it was on disk): it catches up before serving.
    world.down.discard(B0)
    _broker(world, tmp_path, B0)
    bob.groups._backoff.clear()
    alice.groups._backoff.clear()
    await alice.groups.send(GROUP, {"text": "c0"})
    for member in (alice, bob):
        await member.groups._poll(GROUP, wait=0)
        assert member.ids() == ["a0", "a1", "a2", "b0", "b1", "b2", "c0"]
    assert world.brokers[B0].store.last_seq(GROUP) == 6 and world.brokers[B1].store.last_seq(GROUP) == 6
    assert [e.message_id for e in world.brokers[B0].store.tail(GROUP, -1)] == \
        [e.message_id for e in world.brokers[B1].store.tail(GROUP, -1)]


async def test_a_member_that_was_away_gets_what_it_missed(world: World, tmp_path: Path):
    alice, carol = await _joined(world, tmp_path, CREATOR, CAROL)
    await alice.groups.ensure_brokers(CREATOR, 2)
    await alice.groups.send(GROUP, {"text": "first"})
    await carol.groups._poll(GROUP, wait=0)
    await carol.groups.leave(GROUP)
    for n in range(3):
        await alice.groups.send(GROUP, {"text": f"missed{n}"})
    await carol.groups.join(GROUP, "friends", CREATOR)
    await carol.groups.close()
    assert carol.ids() == ["first", "missed0", "missed1", "missed2"]


async def test_a_broker_behind_numbers_after_what_members_saw(world: World, tmp_path: Path):
    """The only broker that had the last messages is gone: numbers are not reused for new ones."""
    alice, bob = await _joined(world, tmp_path, CREATOR, BOB)
    await alice.groups.ensure_brokers(CREATOR, 2)
    world.down.add(B1)
    await alice.groups.send(GROUP, {"text": "only on b0"})
    await bob.groups._poll(GROUP, wait=0)
    world.down = {B0}
    world.brokers[B1].positions.clear()
    await bob.groups._poll(GROUP, wait=0)  # tells B1 it is at 0
    bob.groups._backoff.clear()
    result = await alice.groups.send(GROUP, {"text": "after"})
    assert result["sequence_id"] == 1
    await bob.groups._poll(GROUP, wait=0)
    assert bob.ids() == ["only on b0", "after"]


def test_proof_payload_names_the_member():
    assert proof_payload(GROUP, BOB) != proof_payload(GROUP, CAROL)


async def test_member_machine_follows_its_brokers(world: World, tmp_path: Path):
    alice, bob = await _joined(world, tmp_path, CREATOR, BOB)
    machine = bob.groups.machine(GROUP)
    assert machine.state == "AT_STARTUP"
    machine.fire("connect")
    with pytest.raises(UnavailableError):
        await bob.groups._poll(GROUP, wait=0)  # nobody hired yet
    assert machine.state == "SUPPLIERS?"
    await alice.groups.ensure_brokers(CREATOR, 2)
    await bob.groups._poll(GROUP, wait=0)
    assert (machine.state, machine.active_broker, machine.position) == ("CONNECTED", B0, 0)
    world.down = {B0, B1}
    with pytest.raises(UnavailableError):
        await bob.groups._poll(GROUP, wait=0)
    assert machine.state == "SUBSCRIBE!" and machine.last_error == "unavailable"
    await bob.groups.leave(GROUP)
    assert machine.state == "DISCONNECTED" and not bob.groups.store.get(GROUP).joined  # type: ignore[union-attr]
