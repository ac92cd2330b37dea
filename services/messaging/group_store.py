"""`groups.sqlite` on a member: the groups this node knows, whether it joined, where it is in each queue.

`last_seq` is the sequence number of the last group message this node consumed (-1: none yet).
It only grows, and it is written after the message is in history, so a kill between the two makes
the member fetch that message again, where history (keyed by sender and message id) recognises
it: nothing is shown twice and nothing is skipped.

`last_link` is the broker-signed chain link (chain.py) of that message: the next entry must
chain from its hash, so a broker cannot skip, reorder or rewrite what comes after unseen.

`in_order` is the member's rule for a batch from a broker: keep the entries after `last_seq`, in
sequence order, each number once; anything at or below it is a replay.

Plain sqlite3, no bus, no clock of its own: callers pass the time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from common import codec
from common.fsutil import open_sqlite
from services.messaging.chain import GENESIS, Link
from services.messaging.queue_store import Entry, add_missing_column

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    group_key_id TEXT PRIMARY KEY,
    label TEXT NOT NULL DEFAULT '',
    creator TEXT NOT NULL,
    joined INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT -1,
    last_link TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class GroupRecord:
    """What a member keeps about one group."""

    group_key_id: str
    label: str
    creator: str
    joined: bool
    last_seq: int
    last_link: dict[str, Any] | None = None

    def last_hash(self) -> str | None:
        """The hash the next entry's link must name (None: the member holds no link for `last_seq`)."""
        if self.last_seq < 0:
            return GENESIS
        return Link.from_wire(self.last_link).hash() if self.last_link else None


def in_order(last_seq: int, entries: Iterable[Entry]) -> tuple[list[Entry], int]:
    """(the new entries after `last_seq` in sequence order, each once; how many were replays)."""
    fresh: list[Entry] = []
    replays = 0
    top = last_seq
    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.seq <= top:
            replays += 1
            continue
        fresh.append(entry)
        top = entry.seq
    return fresh, replays


class GroupStore:
    """Groups known to this node as a member."""

    def __init__(self, path: Path):
        self.db = open_sqlite(path, _SCHEMA)
        add_missing_column(self.db, "groups", "last_link", "TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        self.db.close()

    def upsert(self, group: str, label: str, creator: str, now: float) -> GroupRecord:
        self.db.execute("INSERT INTO groups (group_key_id, label, creator, updated) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (group_key_id) DO UPDATE SET label=CASE WHEN excluded.label='' THEN label "
                        "ELSE excluded.label END", (group, label, creator, now))
        found = self.get(group)
        assert found is not None
        return found

    def get(self, group: str) -> GroupRecord | None:
        row = self.db.execute("SELECT * FROM groups WHERE group_key_id=?", (group,)).fetchone()
        return _record(row) if row else None

    def all(self) -> list[GroupRecord]:
        return [_record(r) for r in self.db.execute("SELECT * FROM groups ORDER BY updated").fetchall()]

    def set_joined(self, group: str, joined: bool, now: float) -> None:
        self.db.execute("UPDATE groups SET joined=?, updated=? WHERE group_key_id=?", (int(joined), now, group))

    def advance(self, group: str, seq: int, link: dict[str, Any] | None = None) -> None:
        """Record that messages up to `seq` were consumed, and the link of `seq` (never moves back)."""
        self.db.execute("UPDATE groups SET last_seq=?, last_link=? WHERE group_key_id=? AND last_seq<?",
                        (seq, codec.dumps(link).decode() if link else "", group, seq))

    def remove(self, group: str) -> None:
        self.db.execute("DELETE FROM groups WHERE group_key_id=?", (group,))


def _record(row: sqlite3.Row) -> GroupRecord:
    return GroupRecord(row["group_key_id"], row["label"], row["creator"], bool(row["joined"]), int(row["last_seq"]),
                       codec.loads(row["last_link"]) if row["last_link"] else None)
