"""queues.sqlite (a broker's queues) and groups.sqlite (a member's place in them): numbering, dedupe, order."""

from __future__ import annotations

from pathlib import Path

from services.messaging.group_store import GroupStore, in_order
from services.messaging.queue_store import CONFLICT, CONSUMER, GAP, KNOWN, OK, PRODUCER, REPLACED, Entry, QueueStore

GROUP = "group_abc$alice@127.0.0.1_8084"
ALICE = "http://127.0.0.1:8084/alice.xml"
BOB = "http://127.0.0.1:8084/bob.xml"


def _entry(seq: int, mid: str | None = None) -> Entry:
    return Entry(seq, mid or f"group_{seq}", ALICE, 100.0 + seq, {"body": f"b{seq}"})


def _store(tmp_path: Path) -> QueueStore:
    store = QueueStore(tmp_path / "queues.sqlite")
    store.register(GROUP, ALICE, "ssh-rsa AAA", "sig", 1.0)
    return store


def test_append_numbers_in_order_and_only_committed_are_served(tmp_path: Path):
    store = _store(tmp_path)
    assert store.last_seq(GROUP) == -1
    first = store.append(GROUP, "m0", ALICE, {"x": 0}, 1.0)
    second = store.append(GROUP, "m1", BOB, {"x": 1}, 2.0)
    assert (first.seq, second.seq) == (0, 1)
    assert store.tail(GROUP, -1) == []  # nothing committed yet
    store.commit(GROUP, 0)
    assert [e.message_id for e in store.tail(GROUP, -1)] == ["m0"]
    store.commit(GROUP, 1)
    assert [e.seq for e in store.tail(GROUP, -1)] == [0, 1] and [e.seq for e in store.tail(GROUP, 0)] == [1]
    found = store.find(GROUP, "m1")
    assert found is not None and found[0].seq == 1 and found[1] is True


def test_uncommitted_entries_vanish_after_a_kill(tmp_path: Path):
    store = _store(tmp_path)
    store.append(GROUP, "m0", ALICE, {}, 1.0)
    store.commit(GROUP, 0)
    store.append(GROUP, "m1", ALICE, {}, 2.0)
    store.close()
    store = QueueStore(tmp_path / "queues.sqlite")
    assert store.drop_uncommitted() == 1
    assert store.last_seq(GROUP) == 0 and store.find(GROUP, "m1") is None


def test_place_recognises_known_gaps_and_conflicts(tmp_path: Path):
    store = _store(tmp_path)
    assert store.place(GROUP, _entry(0)) == OK
    assert store.place(GROUP, _entry(0)) == KNOWN  # the same entry again (a resent replicate)
    assert store.place(GROUP, _entry(2)) == GAP  # 1 is missing
    assert store.place(GROUP, _entry(1)) == OK
    assert store.place(GROUP, _entry(1, "other")) == CONFLICT  # committed: never overwritten
    assert store.place(GROUP, _entry(5, "group_0")) == CONFLICT  # same message at another number
    mine = store.append(GROUP, "mine", BOB, {}, 3.0)
    assert mine.seq == 2
    assert store.place(GROUP, _entry(2, "theirs")) == CONFLICT
    assert store.place(GROUP, _entry(2, "theirs"), replace_uncommitted=True) == REPLACED
    assert store.find(GROUP, "mine") is None and [e.message_id for e in store.tail(GROUP, 1)] == ["theirs"]


def test_floor_keeps_numbers_from_being_reused(tmp_path: Path):
    store = _store(tmp_path)
    store.raise_floor(GROUP, 7)
    assert store.last_seq(GROUP) == 7
    assert store.append(GROUP, "m", ALICE, {}, 1.0).seq == 8
    store.raise_floor(GROUP, 3)  # never moves back
    assert store.last_seq(GROUP) == 8


def test_peers_and_listing(tmp_path: Path):
    store = _store(tmp_path)
    store.touch_peer(GROUP, BOB, CONSUMER, 3, 1.0)
    store.touch_peer(GROUP, BOB, CONSUMER, 1, 2.0)
    store.touch_peer(GROUP, ALICE, PRODUCER, 4, 2.0)
    consumers = store.peers(CONSUMER, GROUP)
    assert [(c["idurl"], c["last_seq"], c["count"]) for c in consumers] == [(BOB, 3, 2)]
    assert [p["idurl"] for p in store.peers(PRODUCER)] == [ALICE]
    assert store.remove_peer(GROUP, BOB) and store.peers(CONSUMER) == []
    store.place(GROUP, _entry(0))
    assert store.queues()[0]["messages"] == 1 and store.queues()[0]["last_sequence_id"] == 0


def test_in_order_skips_replays_and_sorts():
    batch = [_entry(4), _entry(2), _entry(3), _entry(3), _entry(1)]
    fresh, replays = in_order(1, batch)
    assert [e.seq for e in fresh] == [2, 3, 4] and replays == 2
    fresh, replays = in_order(4, batch)
    assert fresh == [] and replays == 5


def test_group_store_position_only_grows_and_survives(tmp_path: Path):
    path = tmp_path / "groups.sqlite"
    store = GroupStore(path)
    record = store.upsert(GROUP, "friends", ALICE, 1.0)
    assert (record.joined, record.last_seq, record.label) == (False, -1, "friends")
    store.set_joined(GROUP, True, 2.0)
    store.advance(GROUP, 5)
    store.advance(GROUP, 3)
    store.upsert(GROUP, "", ALICE, 3.0)  # a rejoin without a label keeps it
    store.close()
    store = GroupStore(path)
    record = store.get(GROUP)
    assert record is not None and (record.joined, record.last_seq, record.label) == (True, 5, "friends")
    store.remove(GROUP)
    assert store.all() == []
