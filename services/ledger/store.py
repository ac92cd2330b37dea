"""The ledger's own state on disk (`state/ledger/ledger.sqlite`): market records seen and payment intents.

Crash story. The chain is the truth; this file is the index of it and the memory of what this node
meant to pay.
- A market record is written once, keyed by its transaction id, when first seen (pool or block):
  seen again it is skipped, so a kill between two writes loses nothing a rescan does not find again.
- The block cursor (`scanned_height`) is written in the same transaction as the block's records.
- A payment is an *intent* first: (contract, period) -> the signed transaction, committed before it
  is broadcast. A period has one intent at most (primary key), so however often the node is killed
  between "signed" and "seen on-chain", the same transaction is broadcast again, never a second one.
  Only when the intent's transaction is provably dead (its inputs spent by another confirmed one) is it
  replaced (`replace_intent`).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from services.ledger.book import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    txid TEXT PRIMARY KEY, operation TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    amount TEXT NOT NULL, data TEXT NOT NULL, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS intents (
    contract_id TEXT NOT NULL, period INTEGER NOT NULL, txid TEXT NOT NULL, hex TEXT NOT NULL,
    PRIMARY KEY (contract_id, period));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LedgerStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def records(self) -> list[Record]:
        rows = self.db.execute("SELECT txid, operation, sender, recipient, amount, data, seen FROM records "
                               "ORDER BY rowid").fetchall()
        return [Record(r[0], r[1], r[2], r[3], Decimal(r[4]), r[5], float(r[6])) for r in rows]

    def add_records(self, records: list[Record], scanned_height: int | None = None) -> None:
        """Write records (and the block cursor) in one transaction; records known already are skipped."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.txid, r.operation, r.sender, r.recipient, str(r.amount), r.data, r.seen) for r in records])
            if scanned_height is not None:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('scanned_height', ?)", (str(scanned_height),))

    def scanned_height(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'scanned_height'").fetchone()
        return int(row[0]) if row else -1

    def intent(self, contract_id: str, period: int) -> tuple[str, str] | None:
        row = self.db.execute("SELECT txid, hex FROM intents WHERE contract_id = ? AND period = ?",
                              (contract_id, period)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def intents(self) -> list[tuple[str, int, str, str]]:
        return [(str(r[0]), int(r[1]), str(r[2]), str(r[3]))
                for r in self.db.execute("SELECT contract_id, period, txid, hex FROM intents").fetchall()]

    def add_intent(self, contract_id: str, period: int, txid: str, signed_hex: str) -> bool:
        """Record the one transaction that pays this period; False when the period has one already."""
        cursor = self.db.execute("INSERT OR IGNORE INTO intents VALUES (?, ?, ?, ?)",
                                 (contract_id, period, txid, signed_hex))
        return cursor.rowcount == 1

    def replace_intent(self, contract_id: str, period: int, old_txid: str, txid: str, signed_hex: str) -> None:
        self.db.execute("UPDATE intents SET txid = ?, hex = ? WHERE contract_id = ? AND period = ? AND txid = ?",
                        (txid, signed_hex, contract_id, period, old_txid))
