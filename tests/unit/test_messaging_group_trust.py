"""Hostile brokers against the real broker and member modules: forged messages, gaps, reorders, forks.

A broker holds the group's public key (every member's certificate shows it), so it can seal a
message to the group under any member's name; and it numbers the queue, so it can skip, reorder
or show two members two histories. Each attack is made here with the broker's own code and store
(`_append`, the queue database), and the members must refuse it, count it and report the broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common import crypto
from services.messaging import envelope
from services.messaging.broker import request
from services.messaging.chain import Link
from services.messaging.groups import CONNECTED, OFFLINE, REFUSED
from tests.unit.sealing import seal
from tests.unit.test_messaging_broker import B0, B1, B2, BOB, CAROL, CREATOR, GROUP, Member, World, _broker, _joined

__all__ = ["world"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = World()
    _broker(world, tmp_path, B0)
    _broker(world, tmp_path, B1)
    return world


async def _queue_forged(world: World, broker: str, sender: str, text: str, signer: str | None = None) -> int:
    """The broker numbers a message it sealed itself under `sender`'s name (signed by `signer`, if any)."""
    hostile = world.brokers[broker]
    header = envelope.Header("group_message", envelope.new_message_id("group"), sender, GROUP, 1.0)
    raw = seal(header, {"text": text}, world.public)
    if signer is not None:
        parsed = envelope.parse(raw)
        raw["signature"] = crypto.b64(crypto.sign(world.master_of(signer), parsed.signed_bytes()))
    async with hostile._lock(GROUP):
        entry = await hostile._append(GROUP, envelope.parse(raw), raw)
        assert entry is not None
        hostile.store.commit(GROUP, entry.seq)
    hostile._wake(GROUP)
    return entry.seq


async def test_a_broker_forging_a_members_message_is_dropped_counted_and_reported(world: World, tmp_path: Path):
    alice, carol = await _joined(world, tmp_path, CREATOR, CAROL)
    await alice.groups.ensure_brokers(CREATOR, 2)
    await alice.groups.send(GROUP, {"text": "genuine 0"})
    # B0 queues a message "from Bob": unsigned, then signed with the broker's own key.
    await _queue_forged(world, B0, BOB, "forged unsigned")
    await _queue_forged(world, B0, BOB, "forged by the broker's key", signer=B0)
    await alice.groups.send(GROUP, {"text": "genuine 1"})
    for member in (alice, carol):
        await member.groups._poll(GROUP, wait=0)
        assert member.ids() == ["genuine 0", "genuine 1"]
        assert member.groups.group_dropped[(GROUP, "bad_signature")] == 2
        assert member.groups.faults[(GROUP, B0, "forged_message")] == 2
        assert member.groups.store.get(GROUP).last_seq == 3  # type: ignore[union-attr]
    assert not [m for m in carol.seen if m.sender == BOB]


async def test_brokers_refuse_unsigned_and_missigned_messages(world: World, tmp_path: Path):
    alice, = await _joined(world, tmp_path, CREATOR)
    await alice.groups.ensure_brokers(CREATOR, 2)
    cert, proof, _ = await alice.groups.credentials(GROUP)
    header = envelope.Header("group_message", "group_1", CREATOR, GROUP, 1.0)
    sealed = seal(header, {"text": "x"}, world.public)
    broker = world.brokers[B0]
    reply = await broker.handle(CREATOR, request("produce", GROUP, cert=cert, proof=proof, sealed=sealed))
    assert reply["payload"]["reason"] == "bad_signature"
    sealed["signature"] = crypto.b64(crypto.sign(world.master_of(BOB), envelope.parse(sealed).signed_bytes()))
    reply = await broker.handle(CREATOR, request("produce", GROUP, cert=cert, proof=proof, sealed=sealed))
    assert reply["payload"]["reason"] == "bad_signature" and broker.dropped["bad_signature"] == 2
    assert broker.store.last_seq(GROUP) == -1
    # A replica takes no entry whose sender did not sign it, even numbered and linked by a broker of the group.
    seq = await _queue_forged(world, B0, BOB, "forged", signer=B0)
    entry = broker.store.get(GROUP, seq)
    assert entry is not None
    reply = await world.brokers[B1].handle(B0, request("replicate", GROUP, cert=cert, position=0,
                                                       entries=[entry[0].wire()]))
    assert reply["payload"]["reason"] == "bad_signature" and world.brokers[B1].store.last_seq(GROUP) == -1


async def _three_sent(world: World, alice: Member) -> None:
    await alice.groups.ensure_brokers(CREATOR, 2)
    for n in range(3):
        await alice.groups.send(GROUP, {"text": f"m{n}"})


async def test_a_broker_that_skips_an_entry_is_reported_and_another_serves(world: World, tmp_path: Path):
    alice, carol = await _joined(world, tmp_path, CREATOR, CAROL)
    await _three_sent(world, alice)
    world.brokers[B0].store.db.execute("DELETE FROM entries WHERE seq=1")  # B0 hides m1 from everyone
    await carol.groups._poll(GROUP, wait=0)
    assert carol.ids() == ["m0", "m1", "m2"]  # m0 from B0, then B1 served from m1 on
    assert carol.groups.faults[(GROUP, B0, "gap")] == 1
    assert carol.groups.members[GROUP].active_broker == B1


async def test_a_broker_that_reorders_is_reported_and_another_serves(world: World, tmp_path: Path):
    alice, carol = await _joined(world, tmp_path, CREATOR, CAROL)
    await _three_sent(world, alice)
    db = world.brokers[B0].store.db
    rows = {r["seq"]: dict(r) for r in db.execute("SELECT * FROM entries WHERE seq IN (1, 2)")}
    db.execute("DELETE FROM entries WHERE seq IN (1, 2)")
    for seq, row in ((1, rows[2]), (2, rows[1])):  # m2 before m1, each keeping its own signed link
        db.execute("INSERT INTO entries (group_key_id, seq, message_id, sender, time, sealed, link, committed) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, 1)", (GROUP, seq, row["message_id"], row["sender"], row["time"],
                                                      row["sealed"], row["link"]))
    await carol.groups._poll(GROUP, wait=0)
    assert carol.ids() == ["m0", "m1", "m2"]
    assert carol.groups.faults[(GROUP, B0, "bad_link")] == 1


async def test_a_broker_showing_two_histories_is_caught_by_the_other_brokers_answer(world: World, tmp_path: Path):
    alice, bob, carol = await _joined(world, tmp_path, CREATOR, BOB, CAROL)
    await _three_sent(world, alice)
    await bob.groups._poll(GROUP, wait=0)
    # B0 rewrites its history after m0 with a new, consistently signed chain, and shows it to Carol.
    hostile = world.brokers[B0]
    hostile.store.db.execute("DELETE FROM entries WHERE seq>=1")
    await _queue_forged(world, B0, CREATOR, "another m1", signer=CREATOR)
    await carol.groups._poll(GROUP, wait=0)
    assert carol.ids() == ["m0", "another m1"]
    # B1 (which never took the rewritten entry) shows Carol its own link at her place: two signed
    # links for one number, both by B0: B0 equivocated.
    world.down.add(B0)
    carol.groups._backoff.clear()
    with pytest.raises(Exception) as failed:
        await carol.groups._poll(GROUP, wait=0)
    assert getattr(failed.value, "reason", "") in ("broker_faulty", "unavailable")
    assert carol.groups.faults[(GROUP, B0, "fork")] == 1 and not any(k[1] == B1 for k in carol.groups.faults)
    # The honest replica refuses B0's rewritten entry: it does not chain... it conflicts with what it holds.
    entry = hostile.store.get(GROUP, 1)
    assert entry is not None
    cert, _, _ = await alice.groups.credentials(GROUP)
    reply = await world.brokers[B1].handle(B0, request("replicate", GROUP, cert=cert, position=0,
                                                       entries=[entry[0].wire()]))
    assert reply["command"] == "Fail" or reply["payload"]["result"] == "conflict"
    assert bob.ids() == ["m0", "m1", "m2"]


async def test_a_broker_showing_a_member_a_private_history_is_caught_by_a_cross_check(world: World,
                                                                                      tmp_path: Path):
    alice, carol = await _joined(world, tmp_path, CREATOR, CAROL)
    await _three_sent(world, alice)
    hostile = world.brokers[B0]
    hostile.store.db.execute("DELETE FROM entries WHERE seq>=1")
    await _queue_forged(world, B0, CREATOR, "another m1", signer=CREATOR)
    carol.groups.cross_check_every = 0.0
    await carol.groups._poll(GROUP, wait=0)  # B0 still answers; Carol asks B1 about her last link meanwhile
    await asyncio.gather(*carol.groups._checks)
    assert carol.ids() == ["m0", "another m1"]
    assert carol.groups.faults[(GROUP, B0, "fork")] == 1 and not any(k[1] == B1 for k in carol.groups.faults)
    # A member on the shared history hears nothing wrong from the other broker.
    alice.groups.cross_check_every = 0.0
    world.brokers[B0] = world.brokers[B1]  # (Alice follows B1's history here)
    await alice.groups._poll(GROUP, wait=0)
    await asyncio.gather(*alice.groups._checks)
    assert not alice.groups.faults


async def test_a_broker_that_drops_an_acknowledged_message_is_caught_by_its_producer(world: World,
                                                                                     tmp_path: Path):
    alice, = await _joined(world, tmp_path, CREATOR)
    await _three_sent(world, alice)  # B0 acknowledged m0, m1, m2 at 0, 1, 2 with its signed links
    hostile = world.brokers[B0]
    hostile.store.db.execute("DELETE FROM entries WHERE seq>=1")  # m1 and m2 dropped, another message at 1
    await _queue_forged(world, B0, BOB, "instead of m1", signer=BOB)
    await alice.groups._poll(GROUP, wait=0)
    assert alice.ids() == ["m0", "instead of m1"]
    assert alice.groups.faults[(GROUP, B0, "fork")] == 1


async def test_a_member_joining_after_a_broker_was_replaced_reads_the_history(world: World, tmp_path: Path):
    """Links signed by a former broker count once a current broker's link chains over them."""
    alice, = await _joined(world, tmp_path, CREATOR)
    await _three_sent(world, alice)  # numbered and signed by B0
    world.hired = [(0, B2), (1, B1)]  # B0 left the group; B2 took its place and copies the queue from B1
    _broker(world, tmp_path, B2)
    carol, = await _joined(world, tmp_path, CAROL)
    await carol.groups._poll(GROUP, wait=0)
    assert carol.ids() == [] and not carol.groups.faults  # held: nobody serving the group signed over them yet
    await carol.groups._poll(GROUP, wait=0)  # asks after them, nothing is served twice
    assert carol.ids() == [] and not carol.groups.faults
    await alice.groups.send(GROUP, {"text": "m3"})  # numbered by B2, chained over B0's links
    await carol.groups._poll(GROUP, wait=0)
    assert carol.ids() == ["m0", "m1", "m2", "m3"] and not carol.groups.faults
    assert carol.groups.store.get(GROUP).last_seq == 3  # type: ignore[union-attr]


async def test_links_name_the_previous_link_and_are_signed_by_the_numbering_broker(world: World, tmp_path: Path):
    alice, = await _joined(world, tmp_path, CREATOR)
    await _three_sent(world, alice)
    links = [Link.from_wire(e.link) for e in world.brokers[B1].store.tail(GROUP, -1)]
    assert [link.seq for link in links] == [0, 1, 2] and links[0].prev == ""
    assert [link.prev for link in links[1:]] == [link.hash() for link in links[:-1]]
    assert {link.broker for link in links} == {B0}
    assert crypto.verify(world.master_of(B0).public_key(), links[0].signed_bytes(), crypto.unb64(links[0].signature))


async def test_keepers_report_what_was_checked(world: World, tmp_path: Path):
    alice, = await _joined(world, tmp_path, CREATOR)
    await alice.groups.ensure_brokers(CREATOR, 2)
    alice.groups.answered.clear()
    world.down.add(B1)
    states = {b["idurl"]: b for b in await alice.groups.check_brokers(CREATOR, GROUP)}
    assert states[B0]["state"] == CONNECTED and states[B0]["last_answer"] is not None
    assert states[B1]["state"] == OFFLINE and states[B1]["last_error"] == "unavailable"
    world.down.clear()
    world.brokers[B1].enabled = lambda: False  # the broker service was switched off there
    states = {b["idurl"]: b for b in await alice.groups.check_brokers(CREATOR, GROUP)}
    assert states[B1]["state"] == REFUSED and states[B1]["last_error"] == "broker_disabled"
