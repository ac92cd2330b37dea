"""The DHT's sqlite store keeps values across restarts and drops them when they expire."""

from __future__ import annotations

import time
from pathlib import Path

from services.dht import records
from services.dht.storage import DhtStore


def _put(store: DhtStore, key: str, expire_at: float) -> bytes:
    env = records.make_envelope(0, "skip_validation", key, {"k": key}, expire_at, "00" * 20)
    dkey = records.storage_key(0, "skip_validation", key)
    store.put(dkey, env, records.encode_envelope(env))
    return dkey


def test_values_survive_reopen_and_expire(tmp_path: Path):
    path = tmp_path / "dht.sqlite"
    store = DhtStore(path)
    live = _put(store, "live", time.time() + 60)
    dead = _put(store, "dead", time.time() + 0.01)
    store.remember_published(live, "{}", time.time() + 60, None)
    store.meta_set("node_id", "ab" * 20)
    store.close()

    again = DhtStore(path)
    assert again.get(live) is not None
    assert again.meta_get("node_id") == "ab" * 20
    assert [row[0] for row in again.published()] == [live]
    assert again.get(dead, now=time.time() + 1) is None
    assert again.purge_expired(now=time.time() + 1) >= 1
    assert again.count() == 1 and again.count(0) == 1 and again.count(3) == 0
    again.close()
