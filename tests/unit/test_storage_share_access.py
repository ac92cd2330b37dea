"""Share states from a check of the creator's suppliers (services/storage/share_access.py)."""

from __future__ import annotations

from typing import Any

from common.errors import NodeError
from services.storage.share_access import RECHECK, ShareAccessBook

KEY = "share_0123$alice@host_8084"
ALICE = "http://host:8084/alice.xml"


class FakePeers:
    """A DHT record of the creator's suppliers and the suppliers that answer a ping."""

    def __init__(self, record: list[str], answering: set[str]):
        self.record = record
        self.answering = answering
        self.pinged: list[str] = []

    async def suppliers_of(self, customer_idurl: str) -> list[str]:
        assert customer_idurl == ALICE
        return list(self.record)

    async def api(self, process: str, method: str, wait: float = 30, **kwargs: Any) -> Any:
        assert (process, method) == ("transport", "user_ping")
        self.pinged.append(kwargs["user_id"])
        if kwargs["user_id"] not in self.answering:
            raise NodeError("no answer", reason="timeout", status=504)
        return {"command": "Ack"}


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _book(peers: FakePeers, own: list[str] | None = None, clock: Clock | None = None) -> ShareAccessBook:
    return ShareAccessBook(peers, lambda: list(own or []), None, clock or Clock())


async def test_own_share_is_connected_when_its_suppliers_answer():
    peers = FakePeers([], {"s1", "s2"})
    book = _book(peers, own=["s1", "s2"])
    machine = book.looked_at(KEY, ALICE, mine=True)
    await book.check(KEY, ALICE, True)
    assert machine.state == "CONNECTED" and machine.answered == {"s1", "s2"}
    assert list(machine.past)[-3:] == ["DHT_LOOKUP", "SUPPLIERS?", "CONNECTED"]


async def test_granted_share_needs_enough_of_the_creators_suppliers_and_is_rechecked():
    peers = FakePeers(["s1", "s2", "", "s4"], {"s1"})
    clock = Clock()
    book = _book(peers, clock=clock)
    machine = book.looked_at(KEY, ALICE, mine=False)
    await book.check(KEY, ALICE, False)
    # One of four answered: two are needed to rebuild a block.
    assert machine.state == "DISCONNECTED" and machine.suppliers == ["s1", "s2", "", "s4"]
    peers.answering = {"s1", "s4"}
    pinged = len(peers.pinged)
    book.looked_at(KEY, ALICE, mine=False)
    assert book._checks[KEY].done() and len(peers.pinged) == pinged  # a fresh verdict: no new check
    clock.now += RECHECK + 1
    book.looked_at(KEY, ALICE, mine=False)
    await book._checks[KEY]
    assert machine.state == "CONNECTED"


async def test_no_suppliers_record_is_disconnected_and_a_huge_record_is_bounded():
    book = _book(FakePeers([], set()))
    machine = book.looked_at(KEY, ALICE, mine=False)
    await book.check(KEY, ALICE, False)
    assert machine.state == "DISCONNECTED" and machine.suppliers == []
    peers = FakePeers([f"s{i}" for i in range(1000)], set())
    book = _book(peers)
    book.looked_at(KEY, ALICE, mine=False)
    await book.check(KEY, ALICE, False)
    assert len(peers.pinged) == 64


async def test_closed_share_stays_closed_until_opened_again():
    peers = FakePeers(["s1", "s2"], {"s1", "s2"})
    book = _book(peers)
    await book.check(KEY, ALICE, False)
    book.close(KEY)
    machine = book.looked_at(KEY, ALICE, mine=False)
    assert machine.state == "CLOSED" and not book._checks
    await book.check(KEY, ALICE, False)
    assert machine.state == "CONNECTED"
