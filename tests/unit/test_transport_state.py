"""Presence machine, replay cache, counters and user id parsing."""

from __future__ import annotations

import pytest

from common.automat import AutomatRegistry
from common.errors import InvalidArgumentError
from common.ids import idurl_to_global_id, parse_tcp_contact, idurl_of
from services.transport.presence import PresenceBook
from services.transport.replay import ReplayCache
from services.transport.stats import PacketStats


def test_presence_follows_the_reference_states_and_reports_changes():
    changes: list[tuple[str, str, str]] = []
    registry = AutomatRegistry()
    book = PresenceBook(registry, lambda idurl, old, new: changes.append((idurl, old, new)))
    assert book.state("x") is None
    assert book.fire("x", "outbox-packet") == "PING?"
    assert book.fire("x", "inbox-packet") == "CONNECTED"
    assert book.fire("x", "outbox-packet") == "CONNECTED"
    assert book.fire("x", "ack-timeout") == "ACK?"
    assert book.fire("x", "inbox-packet") == "CONNECTED"
    assert book.fire("x", "connection-lost") == "OFFLINE"
    assert book.fire("x", "link-up") == "CONNECTED"
    assert book.fire("x", "ack-timeout") == "ACK?"
    assert book.fire("x", "ack-timeout") == "OFFLINE"
    assert changes[:2] == [("x", "OFFLINE", "PING?"), ("x", "PING?", "CONNECTED")]
    assert len(changes) == 8
    assert [m.name for m in registry.all()] == ["contact_status"]
    book.close()
    assert registry.all() == []


def test_replay_cache_is_per_sender_and_bounded():
    cache = ReplayCache(window=10, per_sender=3, max_senders=2)
    assert cache.admit("a", b"1", now=0)
    assert not cache.admit("a", b"1", now=1)
    assert cache.admit("b", b"1", now=1)
    assert cache.admit("a", b"2", now=2) and cache.admit("a", b"3", now=2) and cache.admit("a", b"4", now=2)
    assert cache.admit("a", b"1", now=3)  # evicted: at most 3 per sender
    assert not cache.admit("a", b"4", now=5)
    assert cache.admit("a", b"4", now=20)  # outside the window it is refused as stale elsewhere
    cache.admit("c", b"z", now=21)
    assert len(cache._seen) == 2


def test_stats_shape():
    stats = PacketStats()
    stats.sent("http://h/a.xml", 100, "Data")
    stats.received("http://h/a.xml", 40, "Ack")
    stats.dropped("bad_signature", 10, known_sender=True)
    stats.dropped("malformed", 7, known_sender=False)
    stats.send_failed("peer_offline")
    doc = stats.as_dict()
    assert doc["out"]["peers"] == {"http://h/a.xml": 100} and doc["out"]["failed_packets"] == 1
    assert doc["in"]["total_packets"] == 1 and doc["in"]["failed_packets"] == 2
    assert doc["in"]["unknown_packets"] == 1 and doc["in"]["unknown_bytes"] == 7
    assert doc["in"]["commands"] == {"Ack": 1} and doc["in"]["dropped"] == {"bad_signature": 1, "malformed": 1}


@pytest.mark.parametrize("user_id,idurl", [
    ("alice@127.0.0.1_8084", "http://127.0.0.1:8084/alice.xml"),
    ("master$alice@127.0.0.1_8084", "http://127.0.0.1:8084/alice.xml"),
    ("share_x$alice@127.0.0.1_8084:path/to", "http://127.0.0.1:8084/alice.xml"),
    ("alice@id.example.com", "http://id.example.com/alice.xml"),
    ("http://127.0.0.1:8084/alice.xml", "http://127.0.0.1:8084/alice.xml"),
])
def test_user_ids(user_id, idurl):
    assert idurl_of(user_id) == idurl
    assert idurl_of(idurl_to_global_id(idurl)) == idurl


@pytest.mark.parametrize("bad", ["", "alice", "@host", "http://host/alice", "a b@host_1"])
def test_bad_user_ids(bad):
    with pytest.raises(InvalidArgumentError):
        idurl_of(bad)


def test_tcp_contacts():
    assert parse_tcp_contact("tcp://127.0.0.1:7771") == ("127.0.0.1", 7771)
    assert parse_tcp_contact("tcp://127.0.0.1:0") is None
    assert parse_tcp_contact("proxy://x:1") is None


def test_presence_machines_are_bounded_connected_ones_kept(monkeypatch):
    from services.transport import presence

    monkeypatch.setattr(presence, "MAX_PEERS", 3)
    book = presence.PresenceBook(None)
    book.fire("http://h/a.xml", "link-up")  # CONNECTED: kept
    for name in "bcdef":
        book.fire(f"http://h/{name}.xml", "sent-failed")
    assert len(book.items()) == 3 and book.state("http://h/a.xml") == presence.CONNECTED
    assert book.state("http://h/f.xml") is not None and book.state("http://h/b.xml") is None
