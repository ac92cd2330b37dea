"""The identity cache: pinned keys, revisions only go up, followed IDURLs, reload from disk, confirmed
sources only (a document cannot claim someone else's IDURL), pinned peers survive eviction."""

from __future__ import annotations

import pytest

from common import crypto
from services.identity import document
from services.identity.idcache import CacheConflictError, IdentityCache, UnconfirmedError

OLD = "http://127.0.0.1:8084/bob.xml"
NEW = "http://127.0.0.1:9000/bob.xml"


@pytest.fixture(scope="module")
def keys():
    return [crypto.generate_private_key(1024) for _ in range(2)]


def _doc(key, revision=1, source=OLD):
    return document.new_document([source], ["tcp://127.0.0.1:1"], key, revision=revision)


def test_put_get_and_reload(tmp_path, keys):
    cache = IdentityCache(tmp_path)
    cache.load()
    doc = _doc(keys[0])
    cache.put(doc)
    assert cache.get(OLD) == doc and cache.age(OLD) < 60 and cache.age(NEW) == float("inf")
    again = IdentityCache(tmp_path)
    again.load()
    assert again.get(OLD) == doc


def test_key_is_pinned_and_revisions_only_go_up(tmp_path, keys):
    cache = IdentityCache(tmp_path)
    cache.put(_doc(keys[0], revision=3))
    with pytest.raises(CacheConflictError):
        cache.put(_doc(keys[1], revision=4))
    assert cache.put(_doc(keys[0], revision=2)).revision == 3
    assert cache.put(_doc(keys[0], revision=5)).revision == 5


def test_followed_idurl_points_to_the_moved_identity(tmp_path, keys):
    cache = IdentityCache(tmp_path)
    cache.put(_doc(keys[0]))
    moved = _doc(keys[0], revision=2, source=NEW)
    cache.put(moved, requested=OLD, served=[NEW])
    assert cache.get(OLD) == moved and cache.get(NEW) == moved
    assert [d.idurl for d in cache.all()] == [NEW]


def test_tampered_cache_files_are_dropped(tmp_path, keys):
    cache = IdentityCache(tmp_path)
    cache.put(_doc(keys[0]))
    path = next(tmp_path.glob("*@*.json"))
    path.write_text(path.read_text().replace("tcp://127.0.0.1:1", "tcp://6.6.6.6:1"))
    again = IdentityCache(tmp_path)
    again.load()
    assert again.get(OLD) is None and not path.exists()


def test_the_cache_is_bounded_oldest_out(tmp_path, keys, monkeypatch):
    from services.identity import idcache

    monkeypatch.setattr(idcache, "MAX_CACHED", 3)
    cache = IdentityCache(tmp_path)
    urls = [f"http://127.0.0.1:8084/user{i}.xml" for i in range(5)]
    for url in urls:
        cache.put(_doc(keys[0], source=url))
    assert [cache.get(u) is not None for u in urls] == [False, False, True, True, True]
    assert len(list(tmp_path.glob("*@*.json"))) == 3


VICTIM = "http://127.0.0.1:8084/alice.xml"
EVIL = "http://127.0.0.1:6666/alice.xml"


def test_a_document_cannot_claim_an_idurl_it_was_not_confirmed_for(tmp_path, keys):
    """A stranger lists the victim's IDURL among its sources: the IDURL is ignored and counted,
    and the victim's own document is accepted afterwards (issue 19)."""
    victim_key, stranger_key = keys
    cache = IdentityCache(tmp_path)
    cache.load()
    stranger = document.new_document([EVIL, VICTIM], ["tcp://127.0.0.1:1"], stranger_key)
    assert cache.unconfirmed(stranger, served=[EVIL]) == [VICTIM]
    held = cache.put(stranger, requested=EVIL)
    assert cache.get(VICTIM) is None
    assert held.sources == (EVIL,) and cache.get(EVIL) == held and not held.is_valid()
    assert cache.stats()["unconfirmed_sources"] == 1
    # After a restart too, the stranger's document is known under its own IDURL only.
    again = IdentityCache(tmp_path)
    again.load()
    assert again.get(VICTIM) is None and again.get(EVIL) is not None
    real = document.new_document([VICTIM], ["tcp://127.0.0.1:2"], victim_key)
    assert again.put(real) == real and again.get(VICTIM) == real
    assert again.get(EVIL) is not None and again.get(EVIL).publickey == stranger.publickey


def test_a_document_whose_primary_does_not_confirm_it_is_refused(tmp_path, keys):
    victim_key, stranger_key = keys
    cache = IdentityCache(tmp_path)
    stranger = document.new_document([VICTIM, EVIL], ["tcp://127.0.0.1:1"], stranger_key)
    with pytest.raises(UnconfirmedError):
        cache.put(stranger, requested=EVIL)
    assert cache.get(VICTIM) is None and cache.get(EVIL) is None and cache.all() == []
    real = document.new_document([VICTIM], ["tcp://127.0.0.1:2"], victim_key)
    assert cache.put(real) == real


def test_rotation_sources_count_when_served_or_already_held(tmp_path, keys):
    cache = IdentityCache(tmp_path)
    cache.put(_doc(keys[0]))
    rotated = document.new_document([NEW, OLD], ["tcp://127.0.0.1:1"], keys[0], revision=2)
    # Fetched at the new IDURL: the old one holds the same key here already.
    assert cache.unconfirmed(rotated, served=[NEW]) == []
    assert cache.put(rotated, requested=NEW) == rotated
    assert cache.get(OLD) == rotated and cache.stats()["unconfirmed_sources"] == 0
    # A fresh cache fetching the old IDURL confirms the new one by asking its server (`served`).
    fresh = IdentityCache(tmp_path / "fresh")
    assert fresh.unconfirmed(rotated, served=[OLD]) == [NEW]
    assert fresh.put(rotated, requested=OLD, served=[NEW]) == rotated


def test_pinned_identities_survive_a_flood_of_minted_ones(tmp_path, keys, monkeypatch):
    """More minted identities than the cache holds push out the least recently fetched, never a
    pinned peer's (issue 19); the pin outlives a restart."""
    from services.identity import idcache

    monkeypatch.setattr(idcache, "MAX_CACHED", 20)
    cache = IdentityCache(tmp_path)
    cache.load()
    friend = _doc(keys[0], source="http://127.0.0.1:8084/friend.xml")
    cache.put(friend)
    assert cache.set_pins("friends", [friend.idurl]) is True and cache.set_pins("friends", [friend.idurl]) is False
    for i in range(60):
        cache.put(_doc(keys[1], source=f"http://127.0.0.1:6666/mint{i}.xml"))
    assert cache.get(friend.idurl) == friend
    assert cache.stats()["cached"] == 20 and cache.stats()["pinned"] == 1
    again = IdentityCache(tmp_path)
    again.load()
    assert again.pinned(friend.idurl) and again.get(friend.idurl) == friend
    for i in range(60, 90):
        again.put(_doc(keys[1], source=f"http://127.0.0.1:6666/mint{i}.xml"))
    assert again.get(friend.idurl) == friend
    # Unpinned, it is the least recently fetched: the next document pushes it out.
    again.set_pins("friends", [])
    again.put(_doc(keys[1], source="http://127.0.0.1:6666/last.xml"))
    assert again.get(friend.idurl) is None
