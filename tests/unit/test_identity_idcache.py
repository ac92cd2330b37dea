"""The identity cache: pinned keys, revisions only go up, followed IDURLs, reload from disk."""

from __future__ import annotations

import pytest

from common import crypto
from services.identity import document
from services.identity.idcache import CacheConflictError, IdentityCache

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
    cache.put(moved, requested=OLD)
    assert cache.get(OLD) == moved and cache.get(NEW) == moved
    assert [d.idurl for d in cache.all()] == [NEW]


def test_tampered_cache_files_are_dropped(tmp_path, keys):
    cache = IdentityCache(tmp_path)
    cache.put(_doc(keys[0]))
    path = next(tmp_path.glob("*.xml"))
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
    assert len(list(tmp_path.glob("*.xml"))) == 3
