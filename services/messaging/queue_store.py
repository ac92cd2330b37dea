"""`queues.sqlite` on a message broker: the ordered queue of every group it keeps.

A queue is named by its group key id. Each entry is one sealed group message (the broker never
sees its plaintext) at a sequence number; `(group, seq)` and `(group, message_id)` are both
unique, so a message resent by its producer (same message id) is never queued twice.

An entry the broker assigned itself stays *uncommitted* until it has been replicated to the
group's other brokers (broker.py); consumers only ever see the committed prefix of a queue
(`tail`). Entries copied from another broker are committed at once: the broker that assigned
them is the one that waits.

Each entry keeps the signed link of the broker that numbered it (chain.py); `floor_hash` is
the hash of the link at `floor` when a consumer raised the floor with it, so the next link
chains from what that consumer saw.

`floor` is the lowest sequence number the broker may assign next minus one: a consumer that has
already seen seq N (from a broker that has since died) raises it to N, so numbers are never
reused for different messages. WAL journal: a committed write survives a kill of the process.

Plain sqlite3, no bus, no clock of its own: callers pass the time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import codec
from common.fsutil import open_sqlite

OK = "ok"
KNOWN = "known"
GAP = "gap"
CONFLICT = "conflict"
REPLACED = "replaced"

CONSUMER = "consumer"
PRODUCER = "producer"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    group_key_id TEXT PRIMARY KEY,
    creator TEXT NOT NULL,
    public TEXT NOT NULL,
    signature TEXT NOT NULL,
    floor INTEGER NOT NULL DEFAULT -1,
    floor_hash TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    group_key_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    time REAL NOT NULL,
    sealed TEXT NOT NULL,
    link TEXT NOT NULL DEFAULT '',
    committed INTEGER NOT NULL,
    PRIMARY KEY (group_key_id, seq),
    UNIQUE (group_key_id, message_id)
);
CREATE TABLE IF NOT EXISTS peers (
    group_key_id TEXT NOT NULL,
    idurl TEXT NOT NULL,
    role TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT -1,
    count INTEGER NOT NULL DEFAULT 0,
    seen REAL NOT NULL,
    PRIMARY KEY (group_key_id, idurl, role)
);
"""


@dataclass(frozen=True)
class Entry:
    """One queued message: where it is in the queue, who produced it, its sealed form, its signed link."""

    seq: int
    message_id: str
    sender: str
    time: float
    sealed: dict[str, Any]
    link: dict[str, Any] | None = None

    def wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "message_id": self.message_id, "sender": self.sender, "time": self.time,
                "sealed": self.sealed, "link": self.link}

    @staticmethod
    def from_wire(doc: Any) -> "Entry":
        """Strictly decode an entry another node sent; raises `ValueError`."""
        if not isinstance(doc, dict):
            raise ValueError("entry must be an object")
        seq, message_id, sender, sealed = doc.get("seq"), doc.get("message_id"), doc.get("sender"), doc.get("sealed")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError("entry seq must be a non-negative integer")
        if not isinstance(message_id, str) or not message_id or len(message_id) > 128:
            raise ValueError("entry message_id must be text")
        if not isinstance(sender, str) or not sender or not isinstance(sealed, dict):
            raise ValueError("entry sender and sealed are required")
        link = doc.get("link")
        if link is not None and not isinstance(link, dict):
            raise ValueError("entry link must be an object")
        return Entry(seq, message_id, sender, float(doc.get("time") or 0.0), sealed, link)


def add_missing_column(db: sqlite3.Connection, table: str, column: str, definition: str) -> None:
    """Add a column a database made by an earlier build lacks (CREATE TABLE IF NOT EXISTS keeps the old table)."""
    if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(int(row["seq"]), row["message_id"], row["sender"], float(row["time"]), codec.loads(row["sealed"]),
                 codec.loads(row["link"]) if row["link"] else None)


class QueueStore:
    """The queues a broker keeps, their entries, and who consumes and produces on them."""

    def __init__(self, path: Path):
        self.db = open_sqlite(path, _SCHEMA)
        add_missing_column(self.db, "queues", "floor_hash", "TEXT NOT NULL DEFAULT ''")
        add_missing_column(self.db, "entries", "link", "TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        self.db.close()

    # ---- queues --------------------------------------------------------------------------------

    def register(self, group: str, creator: str, public: str, signature: str, now: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO queues (group_key_id, creator, public, signature, created) "
                        "VALUES (?, ?, ?, ?, ?)", (group, creator, public, signature, now))

    def queue(self, group: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM queues WHERE group_key_id=?", (group,)).fetchone()
        return dict(row) if row else None

    def queues(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT q.*, (SELECT COUNT(*) FROM entries e WHERE e.group_key_id=q.group_key_id) AS messages "
            "FROM queues q ORDER BY created").fetchall()
        return [dict(r, last_sequence_id=self.last_seq(r["group_key_id"])) for r in rows]

    # ---- entries -------------------------------------------------------------------------------

    def last_seq(self, group: str) -> int:
        """The highest sequence number taken in `group` (entries or floor); -1 for an empty queue."""
        row = self.db.execute(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM entries WHERE group_key_id=?), -1), "
            "COALESCE((SELECT floor FROM queues WHERE group_key_id=?), -1))", (group, group)).fetchone()
        return int(row[0])

    def raise_floor(self, group: str, seq: int, link_hash: str = "") -> None:
        """Never number at or below `seq` again; the next link chains from `link_hash` (a consumer's)."""
        self.db.execute("UPDATE queues SET floor_hash=CASE WHEN floor < ? THEN ? ELSE floor_hash END, "
                        "floor=MAX(floor, ?) WHERE group_key_id=?", (seq, link_hash, seq, group))

    def floor(self, group: str) -> tuple[int, str]:
        """(floor, the hash of the link at it) of `group`."""
        row = self.db.execute("SELECT floor, floor_hash FROM queues WHERE group_key_id=?", (group,)).fetchone()
        return (int(row[0]), str(row[1])) if row else (-1, "")

    def find(self, group: str, message_id: str) -> tuple[Entry, bool] | None:
        """The entry holding `message_id` and whether it is committed."""
        row = self.db.execute("SELECT * FROM entries WHERE group_key_id=? AND message_id=?",
                              (group, message_id)).fetchone()
        return (_entry(row), bool(row["committed"])) if row else None

    def get(self, group: str, seq: int) -> tuple[Entry, bool] | None:
        row = self.db.execute("SELECT * FROM entries WHERE group_key_id=? AND seq=?", (group, seq)).fetchone()
        return (_entry(row), bool(row["committed"])) if row else None

    def append(self, group: str, message_id: str, sender: str, sealed: dict[str, Any], now: float,
               link: dict[str, Any] | None = None) -> Entry:
        """Give a new message the next sequence number, uncommitted (one atomic statement).

        `link` is its signed chain link, made by the caller for `last_seq + 1` under its lock.
        """
        entry = Entry(self.last_seq(group) + 1, message_id, sender, now, sealed, link)
        if link is not None and link.get("seq") != entry.seq:
            raise ValueError("the link names another sequence number")
        self._insert(group, entry, committed=False)
        return entry

    def drop_uncommitted(self) -> int:
        """Forget entries whose numbering never finished (a kill mid-`produce`; its producer resends)."""
        return self.db.execute("DELETE FROM entries WHERE committed=0").rowcount

    def commit(self, group: str, seq: int) -> None:
        self.db.execute("UPDATE entries SET committed=1 WHERE group_key_id=? AND seq=?", (group, seq))

    def drop(self, group: str, seq: int, message_id: str) -> None:
        """Remove an uncommitted entry this broker assigned (it lost its place to another broker's)."""
        self.db.execute("DELETE FROM entries WHERE group_key_id=? AND seq=? AND message_id=? AND committed=0",
                        (group, seq, message_id))

    def place(self, group: str, entry: Entry, replace_uncommitted: bool = False) -> str:
        """Put an entry another broker assigned at its sequence number.

        Returns `known` (already there), `ok` (stored), `replaced` (an uncommitted entry of ours
        gave way, when `replace_uncommitted`), `gap` (entries before it are missing here) or
        `conflict` (its place or its message id is taken otherwise).
        """
        same_id = self.find(group, entry.message_id)
        if same_id is not None:
            if same_id[0].seq == entry.seq:
                self.commit(group, entry.seq)
                return KNOWN
            return CONFLICT
        taken = self.get(group, entry.seq)
        if taken is not None:
            if taken[1] or not replace_uncommitted:
                return CONFLICT
            self.db.execute("DELETE FROM entries WHERE group_key_id=? AND seq>=? AND committed=0",
                            (group, entry.seq))
            self._insert(group, entry, committed=True)
            return REPLACED
        if entry.seq > self.last_seq(group) + 1:
            return GAP
        self._insert(group, entry, committed=True)
        return OK

    def tail(self, group: str, after: int, limit: int = 100, committed_only: bool = True) -> list[Entry]:
        """Entries after `after` in order; with `committed_only`, up to the first uncommitted one."""
        rows = self.db.execute("SELECT * FROM entries WHERE group_key_id=? AND seq>? ORDER BY seq LIMIT ?",
                               (group, after, limit)).fetchall()
        found = []
        for row in rows:
            if committed_only and not row["committed"]:
                break
            found.append(_entry(row))
        return found

    def _insert(self, group: str, entry: Entry, committed: bool) -> None:
        self.db.execute("INSERT INTO entries (group_key_id, seq, message_id, sender, time, sealed, link, committed) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (group, entry.seq, entry.message_id, entry.sender, entry.time,
                         codec.dumps(entry.sealed).decode(), codec.dumps(entry.link).decode() if entry.link else "",
                         int(committed)))

    # ---- consumers and producers ---------------------------------------------------------------

    def touch_peer(self, group: str, idurl: str, role: str, last_seq: int, now: float) -> None:
        self.db.execute(
            "INSERT INTO peers (group_key_id, idurl, role, last_seq, count, seen) VALUES (?, ?, ?, ?, 1, ?) "
            "ON CONFLICT (group_key_id, idurl, role) DO UPDATE SET last_seq=MAX(last_seq, excluded.last_seq), "
            "count=count+1, seen=excluded.seen", (group, idurl, role, last_seq, now))

    def remove_peer(self, group: str, idurl: str, role: str = CONSUMER) -> bool:
        return self.db.execute("DELETE FROM peers WHERE group_key_id=? AND idurl=? AND role=?",
                               (group, idurl, role)).rowcount == 1

    def peers(self, role: str, group: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM peers WHERE role=?", [role]
        if group is not None:
            sql += " AND group_key_id=?"
            params.append(group)
        return [dict(r) for r in self.db.execute(sql + " ORDER BY seen", params).fetchall()]
