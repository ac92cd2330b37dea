"""Arriving Message packets: accepted once, forgeries and replays dropped and counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import crypto
from common.errors import UnavailableError
from services.messaging.envelope import Header, Sealed
from services.messaging.inbox import MessageInbox
from services.messaging.store import MessageStore, StoredMessage
from tests.unit.sealing import open_with, seal

ALICE = "http://127.0.0.1:8084/alice.xml"
BOB = "http://127.0.0.1:8084/bob.xml"
MALLORY = "http://127.0.0.1:8084/mallory.xml"
BOB_KEY = crypto.generate_private_key(1024)
OTHER_KEY = crypto.generate_private_key(1024)
NOW = 1_800_000_000.0


class BobKeys:
    """Bob's keyring: open with his key (or fail like the identity process does)."""

    def __init__(self) -> None:
        self.down = False

    async def my_idurl(self) -> str | None:
        return BOB

    async def open(self, sealed: Sealed) -> bytes:
        if self.down:
            raise UnavailableError("identity is restarting")
        return open_with(BOB_KEY, sealed)


@pytest.fixture
def inbox(tmp_path: Path):
    seen: list[StoredMessage] = []

    async def on_new(message: StoredMessage) -> bool:
        seen.append(message)
        return True

    box = MessageInbox(MessageStore(tmp_path / "m.sqlite"), BobKeys(), on_new, lambda: 3600.0, clock=lambda: NOW)
    box.seen = seen  # type: ignore[attr-defined]
    return box


def _packet(creator: str = ALICE, sender: str = ALICE, recipient: str = BOB, key=BOB_KEY, when: float = NOW,
            message_id: str = "private_1", data: dict | None = None) -> dict:
    header = Header("private_message", message_id, sender, recipient, when)
    payload = seal(header, data or {"message": "hello"}, key.public_key())
    return {"command": "Message", "creator_idurl": creator, "owner_idurl": creator, "packet_id": "p1",
            "payload": payload}


async def test_accepted_once_then_acknowledged_as_duplicate(inbox):
    reply = await inbox.handle(_packet())
    assert reply["command"] == "Ack" and reply["payload"]["consumed"] is True
    again = await inbox.handle(_packet())  # a retry: a new packet carrying the same message
    assert again["command"] == "Ack" and again["payload"]["duplicate"] is True
    assert len(inbox.seen) == 1 and inbox.seen[0].data == {"message": "hello"}
    assert len(inbox.store.history(ALICE)) == 1
    assert inbox.dropped["replayed"] == 1 and inbox.received == 1


@pytest.mark.parametrize("packet, reason", [
    (dict(creator=MALLORY), "forged_sender"),
    (dict(recipient=MALLORY), "wrong_recipient"),
    (dict(key=OTHER_KEY), "undecryptable"),
    (dict(when=NOW - 10 * 3600), "expired"),
    (dict(when=NOW + 3600), "bad_time"),
])
async def test_forgeries_are_dropped_and_counted(inbox, packet, reason):
    reply = await inbox.handle(_packet(**packet))
    assert reply["command"] == "Fail" and reply["payload"]["reason"] == reason
    assert inbox.dropped[reason] == 1 and inbox.seen == []
    assert inbox.store.history(ALICE) == [] and inbox.store.history(MALLORY) == []


async def test_tampered_and_malformed(inbox):
    doc = _packet()
    doc["payload"]["message_id"] = "private_2"
    assert (await inbox.handle(doc))["payload"]["reason"] == "undecryptable"
    for payload in (None, "x", {"v": 1}):
        doc = dict(_packet(), payload=payload)
        assert (await inbox.handle(doc))["payload"]["reason"] == "malformed"
    assert inbox.dropped["malformed"] == 3 and inbox.seen == []


async def test_identity_away_is_not_the_senders_fault(inbox):
    inbox.keyring.down = True
    with pytest.raises(UnavailableError):
        await inbox.handle(_packet())
    inbox.keyring.down = False
    assert (await inbox.handle(_packet()))["command"] == "Ack"
