"""`messages.sqlite`: the message history, the outbox and the friends of a node.

One table holds every message, sent or received; a sent message is also the outbox entry while
its `state` is `pending` (so recording it and queueing it is one atomic write, and a restart of
the process finds the outbox where it was). A message is keyed by (sender, message_id,
direction): a message arriving twice (a retry whose Ack was lost, a replay) is recognised and
never stored twice. WAL journal: a committed write survives a kill of the process.

Plain sqlite3, no bus, no clock of its own: callers pass the time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from common import codec
from common.ids import idurl_to_global_id
from common.fsutil import open_sqlite

PENDING = "pending"
DELIVERED = "delivered"
EXPIRED = "expired"
RECEIVED = "received"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    recipient TEXT NOT NULL,
    peer TEXT NOT NULL,
    msg_type TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    time REAL NOT NULL,
    data TEXT NOT NULL,
    state TEXT NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    expires REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (sender, message_id, direction)
);
CREATE INDEX IF NOT EXISTS messages_peer ON messages (peer, time);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, time);
CREATE INDEX IF NOT EXISTS messages_outbox ON messages (state, next_attempt);
CREATE TABLE IF NOT EXISTS friends (
    idurl TEXT PRIMARY KEY,
    alias TEXT NOT NULL DEFAULT '',
    added REAL NOT NULL
);
"""

_COLUMNS = ("sender", "message_id", "direction", "recipient", "peer", "msg_type", "conversation_id", "time",
            "data", "state", "consumed", "attempts", "next_attempt", "expires", "last_error", "updated")


def glob_id(idurl: str) -> str:
    """The reference's `glob_id` of a user's master key: `master$name@host_port` (a key id stays as it is)."""
    if "$" in idurl and "://" not in idurl:
        return idurl  # a group: its key id
    return f"master${idurl_to_global_id(idurl)}"


def conversation_id(a_idurl: str, b_idurl: str) -> str:
    """The same id on both sides of a private conversation: both global ids, sorted, joined by `&`."""
    return "&".join(sorted((idurl_to_global_id(a_idurl), idurl_to_global_id(b_idurl))))


@dataclass
class StoredMessage:
    """One message as kept in history (and, while pending, in the outbox)."""

    sender: str
    message_id: str
    direction: str
    recipient: str
    msg_type: str
    time: float
    data: dict[str, Any]
    state: str
    consumed: bool = False
    attempts: int = 0
    next_attempt: float = 0.0
    expires: float = 0.0
    last_error: str = ""
    updated: float = 0.0
    peer: str = field(default="")
    conversation_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.peer:
            self.peer = self.recipient if self.direction == "out" else self.sender
        if not self.conversation_id:
            self.conversation_id = conversation_id(self.sender, self.recipient)

    def doc(self) -> dict[str, Any]:
        """The reference's history document, with the delivery state beside it."""
        return {
            "conversation_id": self.conversation_id,
            "direction": self.direction,
            "payload": {"data": self.data, "message_id": self.message_id, "msg_type": self.msg_type,
                        "time": int(self.time)},
            "recipient": {"glob_id": glob_id(self.recipient)},
            "sender": {"glob_id": glob_id(self.sender)},
            "state": self.state,
            "consumed": self.consumed,
        }

    def stream_item(self) -> dict[str, Any]:
        """The reference's `message_receive` item."""
        return {"data": self.data, "recipient": glob_id(self.recipient), "sender": glob_id(self.sender),
                "time": self.time, "message_id": self.message_id,
                "dir": "incoming" if self.direction == "in" else "outgoing",
                "msg_type": self.msg_type, "conversation_id": self.conversation_id}


def _row_to_message(row: sqlite3.Row) -> StoredMessage:
    values = dict(row)
    values["data"] = codec.loads(values["data"])
    values["consumed"] = bool(values["consumed"])
    return StoredMessage(**values)


class MessageStore:
    """History, outbox and friends in one sqlite file."""

    def __init__(self, path: Path):
        self.db = open_sqlite(path, _SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ---- messages ------------------------------------------------------------------------------

    def add(self, message: StoredMessage) -> bool:
        """Record a message; False when it is already recorded (same sender, id and direction)."""
        values = [getattr(message, c) for c in _COLUMNS]
        values[_COLUMNS.index("data")] = codec.dumps(message.data).decode()
        values[_COLUMNS.index("consumed")] = int(message.consumed)
        cursor = self.db.execute(
            f"INSERT OR IGNORE INTO messages ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            values)
        return cursor.rowcount == 1

    def get(self, sender: str, message_id: str, direction: str) -> StoredMessage | None:
        row = self.db.execute("SELECT * FROM messages WHERE sender=? AND message_id=? AND direction=?",
                              (sender, message_id, direction)).fetchone()
        return _row_to_message(row) if row else None

    def outgoing(self, message_id: str) -> StoredMessage | None:
        row = self.db.execute("SELECT * FROM messages WHERE message_id=? AND direction='out'",
                              (message_id,)).fetchone()
        return _row_to_message(row) if row else None

    def set_consumed(self, message: StoredMessage, now: float) -> None:
        self.db.execute("UPDATE messages SET consumed=1, updated=? WHERE sender=? AND message_id=? AND direction=?",
                        (now, message.sender, message.message_id, message.direction))

    def mark_delivered(self, message_id: str, consumed: bool, now: float) -> None:
        self.db.execute("UPDATE messages SET state=?, consumed=?, last_error='', updated=? "
                        "WHERE message_id=? AND direction='out' AND state=?",
                        (DELIVERED, int(consumed), now, message_id, PENDING))

    def mark_failed_attempt(self, message_id: str, error: str, next_attempt: float, now: float) -> None:
        self.db.execute("UPDATE messages SET attempts=attempts+1, last_error=?, next_attempt=?, updated=? "
                        "WHERE message_id=? AND direction='out' AND state=?",
                        (error[:200], next_attempt, now, message_id, PENDING))

    def make_due(self, recipient: str | None, now: float) -> None:
        """Make the pending messages of `recipient` (of everyone when None) due for an attempt now."""
        sql = "UPDATE messages SET next_attempt=? WHERE direction='out' AND state=? AND next_attempt>?"
        params: list[Any] = [now, PENDING, now]
        if recipient is not None:
            sql += " AND recipient=?"
            params.append(recipient)
        self.db.execute(sql, params)

    def postpone(self, message_id: str, next_attempt: float) -> None:
        self.db.execute("UPDATE messages SET next_attempt=MAX(next_attempt, ?) "
                        "WHERE message_id=? AND direction='out' AND state=?", (next_attempt, message_id, PENDING))

    def expire(self, now: float) -> list[StoredMessage]:
        """Mark pending messages past their time to live as expired; return them."""
        rows = self.db.execute("SELECT * FROM messages WHERE direction='out' AND state=? AND expires<=? "
                               "ORDER BY time, rowid", (PENDING, now)).fetchall()
        if rows:
            self.db.execute("UPDATE messages SET state=?, updated=? WHERE direction='out' AND state=? AND expires<=?",
                            (EXPIRED, now, PENDING, now))
        return [_row_to_message(r) for r in rows]

    def pending(self, recipient: str | None = None) -> list[StoredMessage]:
        """The outbox, oldest first (of one recipient when given)."""
        sql = "SELECT * FROM messages WHERE direction='out' AND state=?"
        params: list[Any] = [PENDING]
        if recipient is not None:
            sql += " AND recipient=?"
            params.append(recipient)
        rows = self.db.execute(sql + " ORDER BY time, rowid", params).fetchall()
        return [_row_to_message(r) for r in rows]

    def next_attempt_at(self) -> float | None:
        row = self.db.execute("SELECT MIN(next_attempt) FROM messages WHERE direction='out' AND state=?",
                              (PENDING,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def history(self, peer: str, msg_types: Iterable[str] = (), offset: int = 0,
                limit: int = 100, arrival_order: bool = False) -> list[StoredMessage]:
        """Messages exchanged with `peer`: the `limit` latest after skipping `offset`, oldest first.

        `arrival_order` orders by when they were recorded: a group's messages are recorded in
        their queue order, which senders' clocks need not follow.
        """
        sql = "SELECT * FROM messages WHERE peer=?"
        params: list[Any] = [peer]
        types = list(msg_types)
        if types:
            sql += f" AND msg_type IN ({', '.join('?' * len(types))})"
            params.extend(types)
        sql += " ORDER BY rowid DESC" if arrival_order else " ORDER BY time DESC, rowid DESC"
        sql += " LIMIT ? OFFSET ?"
        params.extend([limit, offset])
        rows = self.db.execute(sql, params).fetchall()
        return [_row_to_message(r) for r in reversed(rows)]

    def conversations(self, msg_types: Iterable[str] = (), offset: int = 0,
                      limit: int = 100) -> list[dict[str, Any]]:
        """One item per conversation, the most recently updated first."""
        sql = ("SELECT conversation_id, msg_type, peer, MIN(time) AS started, MAX(time) AS last_updated, "
               "COUNT(*) AS messages FROM messages")
        params: list[Any] = []
        types = list(msg_types)
        if types:
            sql += f" WHERE msg_type IN ({', '.join('?' * len(types))})"
            params.extend(types)
        sql += " GROUP BY conversation_id, msg_type ORDER BY last_updated DESC LIMIT ? OFFSET ?"
        params.extend([limit, offset])
        items = []
        for row in self.db.execute(sql, params).fetchall():
            last = self.db.execute("SELECT message_id FROM messages WHERE conversation_id=? AND msg_type=? "
                                   "ORDER BY time DESC, rowid DESC LIMIT 1",
                                   (row["conversation_id"], row["msg_type"])).fetchone()
            items.append(dict(row, last_message_id=last[0] if last else ""))
        return items

    def conversation_ids(self, msg_type: str) -> set[str]:
        """The conversations of one message type that hold at least one message."""
        rows = self.db.execute("SELECT DISTINCT conversation_id FROM messages WHERE msg_type=?", (msg_type,))
        return {str(row[0]) for row in rows}

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT direction, state, COUNT(*) FROM messages GROUP BY direction, state")
        return {f"{direction}_{state}": count for direction, state, count in rows}

    # ---- friends -------------------------------------------------------------------------------

    def add_friend(self, idurl: str, alias: str, now: float) -> bool:
        """Add or relabel a friend; True when it is new."""
        known = self.db.execute("SELECT 1 FROM friends WHERE idurl=?", (idurl,)).fetchone() is not None
        if known:
            if alias:
                self.db.execute("UPDATE friends SET alias=? WHERE idurl=?", (alias, idurl))
            return False
        self.db.execute("INSERT INTO friends (idurl, alias, added) VALUES (?, ?, ?)", (idurl, alias, now))
        return True

    def remove_friend(self, idurl: str) -> bool:
        return self.db.execute("DELETE FROM friends WHERE idurl=?", (idurl,)).rowcount == 1

    def friends(self) -> list[tuple[str, str]]:
        return [(r["idurl"], r["alias"]) for r in self.db.execute("SELECT idurl, alias FROM friends ORDER BY added")]
