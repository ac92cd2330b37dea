"""The DHT's local database (sqlite): values held for the network, values this node published.

Two tables because they have different owners: `items` are what peers asked this node to keep
(they expire and are dropped), `published` are this node's own writes, which it republishes after
a restart or a rejoin until they expire (or keeps renewing, for records it owns). A `meta` table
keeps the node id and the last known contacts, so a restarted node comes back as the same node
and can rejoin even when the seed is gone.

Writes are single small statements; sqlite in WAL mode answers them in microseconds, so the
event loop calls it directly.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from services.dht import records

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    dkey BLOB PRIMARY KEY, layer_id INTEGER, record_type TEXT, key TEXT,
    envelope TEXT NOT NULL, stored_at REAL NOT NULL, expire_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS items_expire ON items(expire_at);
CREATE TABLE IF NOT EXISTS published (
    dkey BLOB PRIMARY KEY, envelope TEXT NOT NULL, expire_at REAL NOT NULL, renew_seconds REAL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

MAX_ITEMS = 200_000
"""Values this node keeps for others at most; beyond it, the ones closest to expiry go first."""


class DhtStore:
    """sqlite-backed store of DHT envelopes (JSON text), keyed by the 20-byte DHT key."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- values held for the network ---------------------------------------------------------

    def put(self, dkey: bytes, env: dict[str, Any], text: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?)",
            (dkey, int(env["layer_id"]), env["record_type"], env["key"], text, time.time(), float(env["expire_at"])),
        )
        if self.count() > MAX_ITEMS:
            self.db.execute("DELETE FROM items WHERE dkey IN (SELECT dkey FROM items ORDER BY expire_at LIMIT ?)",
                            (self.count() - MAX_ITEMS,))

    def get(self, dkey: bytes, now: float | None = None) -> str | None:
        """The live envelope text stored under `dkey`, or None."""
        row = self.db.execute("SELECT envelope FROM items WHERE dkey=? AND expire_at>?",
                              (dkey, time.time() if now is None else now)).fetchone()
        return row[0] if row else None

    def envelope(self, dkey: bytes) -> dict[str, Any] | None:
        """The live envelope stored under `dkey`, decoded; None when absent or unreadable."""
        text = self.get(dkey)
        if text is None:
            return None
        try:
            return records.decode_envelope(text)
        except records.RecordError:
            return None

    def delete(self, dkey: bytes) -> None:
        self.db.execute("DELETE FROM items WHERE dkey=?", (dkey,))

    def items(self, now: float | None = None) -> Iterator[tuple[bytes, str]]:
        """(dkey, envelope text) of every live value."""
        cur = self.db.execute("SELECT dkey, envelope FROM items WHERE expire_at>?",
                              (time.time() if now is None else now,))
        yield from cur.fetchall()

    def count(self, layer_id: int | None = None) -> int:
        if layer_id is None:
            return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM items WHERE layer_id=?", (layer_id,)).fetchone()[0])

    def purge_expired(self, now: float | None = None) -> int:
        current = time.time() if now is None else now
        deleted = self.db.execute("DELETE FROM items WHERE expire_at<=?", (current,)).rowcount
        deleted += self.db.execute("DELETE FROM published WHERE expire_at<=? AND renew_seconds IS NULL",
                                   (current,)).rowcount
        return deleted

    # --- values this node published ----------------------------------------------------------

    def remember_published(self, dkey: bytes, text: str, expire_at: float, renew_seconds: float | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO published VALUES (?,?,?,?)", (dkey, text, expire_at, renew_seconds))

    def published(self) -> list[tuple[bytes, str, float, float | None]]:
        """(dkey, envelope text, expire_at, renew_seconds) of this node's own values."""
        return list(self.db.execute("SELECT dkey, envelope, expire_at, renew_seconds FROM published").fetchall())

    def forget_published(self, dkey: bytes) -> None:
        self.db.execute("DELETE FROM published WHERE dkey=?", (dkey,))

    # --- node identity and contacts ----------------------------------------------------------

    def meta_get(self, name: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def meta_set(self, name: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (name, json.dumps(value)))
