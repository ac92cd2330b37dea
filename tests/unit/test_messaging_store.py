"""messages.sqlite: history without duplicates, outbox states, conversations, friends, restarts."""

from __future__ import annotations

from pathlib import Path

from services.messaging.store import DELIVERED, EXPIRED, PENDING, RECEIVED, MessageStore, StoredMessage

ME = "http://127.0.0.1:8084/alice.xml"
BOB = "http://127.0.0.1:8084/bob.xml"
CAROL = "http://127.0.0.1:8084/carol.xml"


def _out(n: int, to: str = BOB, t: float | None = None) -> StoredMessage:
    when = 100.0 + n if t is None else t
    return StoredMessage(ME, f"private_{n}", "out", to, "private_message", when, {"n": n}, PENDING,
                         next_attempt=when, expires=when + 50)


def _in(n: int, sender: str = BOB) -> StoredMessage:
    return StoredMessage(sender, f"private_{n}", "in", ME, "private_message", 100.0 + n, {"n": n}, RECEIVED)


def test_history_dedupes_pages_and_survives_reopen(tmp_path: Path):
    path = tmp_path / "messages.sqlite"
    store = MessageStore(path)
    for n in range(5):
        assert store.add(_out(n))
        assert store.add(_in(100 + n))
    assert not store.add(_in(100))  # the same message again
    assert store.add(_in(100, sender=CAROL))  # another sender may use the same id
    store.close()
    store = MessageStore(path)
    items = store.history(BOB)
    assert len(items) == 10
    assert [m.time for m in items] == sorted(m.time for m in items)
    latest = store.history(BOB, limit=3)
    assert [m.data["n"] for m in latest] == [102, 103, 104]
    assert [m.data["n"] for m in store.history(BOB, offset=3, limit=2)] == [100, 101]
    assert store.history(BOB, ["group_message"]) == []
    doc = items[0].doc()
    assert doc["payload"]["data"] == {"n": 0} and doc["payload"]["msg_type"] == "private_message"
    assert doc["sender"]["glob_id"] == "master$alice@127.0.0.1_8084"
    assert doc["recipient"]["glob_id"] == "master$bob@127.0.0.1_8084"
    assert doc["direction"] == "out" and doc["conversation_id"] == "alice@127.0.0.1_8084&bob@127.0.0.1_8084"
    assert items[-1].doc()["conversation_id"] == doc["conversation_id"]


def test_outbox_states(tmp_path: Path):
    store = MessageStore(tmp_path / "m.sqlite")
    for n in range(3):
        store.add(_out(n))
    store.add(_out(9, to=CAROL))
    assert [m.message_id for m in store.pending(BOB)] == ["private_0", "private_1", "private_2"]
    store.mark_delivered("private_0", True, 110)
    assert store.outgoing("private_0").state == DELIVERED and store.outgoing("private_0").consumed
    store.mark_failed_attempt("private_1", "peer_offline", 500, 111)
    failed = store.outgoing("private_1")
    assert failed.attempts == 1 and failed.last_error == "peer_offline" and failed.next_attempt == 500
    store.make_due(BOB, 120)
    assert store.outgoing("private_1").next_attempt == 120
    assert store.next_attempt_at() == 102.0
    expired = store.expire(152.5)
    assert [m.message_id for m in expired] == ["private_1", "private_2"]
    assert store.outgoing("private_2").state == EXPIRED
    assert store.counts() == {"out_delivered": 1, "out_expired": 2, "out_pending": 1}


def test_conversations_and_friends(tmp_path: Path):
    store = MessageStore(tmp_path / "m.sqlite")
    store.add(_out(1))
    store.add(_in(2, sender=CAROL))
    store.add(_in(3))
    items = store.conversations()
    assert [i["peer"] for i in items] == [BOB, CAROL]
    assert items[0]["messages"] == 2 and items[0]["last_message_id"] == "private_3"
    assert store.conversations(["group_message"]) == []
    assert len(store.conversations(offset=1)) == 1
    assert store.add_friend(BOB, "bobby", 1) and not store.add_friend(BOB, "bob", 2)
    assert store.friends() == [(BOB, "bob")]
    assert store.remove_friend(BOB) and not store.remove_friend(BOB)
