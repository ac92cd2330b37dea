"""The customer's catalog: remote paths, their versions and the blocks of each version (sqlite).

A remote path is `key_id:path` (`master$alice@host_port:docs/a.txt`); items are unique per key
and path, folders are items of type `dir`. A version is one upload of a file: a random `uid`
(which also prefixes its fragments' names on the suppliers), a state, the session key wrapped
for the item's key, and one row per block with the sha256 of each of its N fragments, so a reader
can check every fragment a supplier hands back.

Each block row also says which supplier positions hold its fragment, verified: `stored` is a
string of N `0`/`1` characters, position `p` set once the supplier at `p` acknowledged the
fragment after its fsync (or listed it with the right sha256), cleared when that supplier is
replaced or a read finds the fragment gone or corrupt. The version's state follows from it:

    uploading --every block on every position--> ready
    uploading --every block on at least k positions, some missing--> degraded  (repaired in the
              background; `ready` once every position holds its fragment again)
    uploading --a block on fewer than k positions, or stopped--> failed
    ready --a position cleared (supplier replaced, fragment lost)--> degraded

`ready` therefore always means any k of the N suppliers bring every block back. Health figures
(`reliable`, per-position counts) are one aggregate query over a version's block rows.

`export`/`import_index` turn everything under one key into a JSON document and back: the catalog
backup stored on the suppliers (encrypted and signed by the caller).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from common import codec
from common.errors import ConflictError, InvalidArgumentError, NotFoundError

UPLOADING, READY, DEGRADED, FAILED = "uploading", "ready", "degraded", "failed"
READABLE = (READY, DEGRADED)
"""States whose every block has at least k verified fragments: a download can read them."""
FILE, DIR = "file", "dir"
MAX_PATH = 1024
MAX_SUPPLIERS = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL, path TEXT NOT NULL, type TEXT NOT NULL,
    created REAL NOT NULL, owner_idurl TEXT NOT NULL DEFAULT '', UNIQUE (key_id, path));
CREATE TABLE IF NOT EXISTS versions (
    uid TEXT PRIMARY KEY, item_id INTEGER NOT NULL, created REAL NOT NULL, state TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0, block_size INTEGER NOT NULL, suppliers INTEGER NOT NULL,
    wrapped_key TEXT NOT NULL, blocks_total INTEGER NOT NULL DEFAULT 0, source_path TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS blocks (
    uid TEXT NOT NULL, block_no INTEGER NOT NULL, plain_size INTEGER NOT NULL, cipher_size INTEGER NOT NULL,
    hashes TEXT NOT NULL, stored TEXT NOT NULL DEFAULT '', PRIMARY KEY (uid, block_no));
CREATE INDEX IF NOT EXISTS versions_item ON versions (item_id);
"""


def split_remote_path(remote_path: Any) -> tuple[str, str]:
    """(key_id, path) of `key_id:path`; raises `InvalidArgumentError` (reason `invalid_remote_path`)."""
    text = str(remote_path or "").strip()
    key_id, sep, path = text.partition(":")
    if not sep or "$" not in key_id or "@" not in key_id:
        raise InvalidArgumentError(f"remote path {text!r} must be key_id:path, e.g. master$alice@host_port:docs/a.txt",
                                   reason="invalid_remote_path")
    return key_id, normalize_path(path)


def normalize_path(path: str) -> str:
    """A catalog path: `/`-separated, no empty, `.` or `..` parts; raises `InvalidArgumentError`."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or len("/".join(parts)) > MAX_PATH:
        raise InvalidArgumentError(f"invalid remote path {path!r}", reason="invalid_remote_path")
    if any(ord(ch) < 32 for p in parts for ch in p):
        raise InvalidArgumentError("remote path has control characters", reason="invalid_remote_path")
    return "/".join(parts)


def new_version_uid() -> str:
    """Time-ordered and unguessable: `F<unix ms>-<random>`, only name-safe characters."""
    return f"F{int(time.time() * 1000)}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Item:
    id: int
    key_id: str
    path: str
    type: str
    created: float
    owner_idurl: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def remote_path(self) -> str:
        return f"{self.key_id}:{self.path}"


@dataclass(frozen=True)
class Version:
    uid: str
    item_id: int
    created: float
    state: str
    size: int
    block_size: int
    suppliers: int
    wrapped_key: str
    blocks_total: int
    source_path: str
    error: str


@dataclass(frozen=True)
class Block:
    uid: str
    block_no: int
    plain_size: int
    cipher_size: int
    hashes: list[str]
    stored: str = ""
    """One `0`/`1` per supplier position: which positions hold this block's fragment, verified."""

    def missing(self) -> list[int]:
        """Positions whose fragment is not verified stored."""
        return [p for p in range(len(self.hashes)) if p >= len(self.stored) or self.stored[p] != "1"]


@dataclass(frozen=True)
class Health:
    """How well one version is stored: from its block rows, no supplier asked."""

    blocks: int
    suppliers: int
    per_position: list[int]
    """Blocks whose fragment each position holds, verified."""
    weakest: int
    """Verified fragments of the version's weakest block (`suppliers` when every block is whole)."""
    weak_block: int
    """That block's number, -1 when every block is whole."""

    @property
    def fragments(self) -> int:
        return self.blocks * self.suppliers

    @property
    def missing_positions(self) -> list[int]:
        return [p for p, count in enumerate(self.per_position) if count < self.blocks]


def stored_mask(positions: Iterable[int], suppliers: int) -> str:
    """The `stored` text of a block whose fragments at `positions` are verified."""
    held = set(positions)
    return "".join("1" if p in held else "0" for p in range(suppliers))


class Catalog:
    """The sqlite catalog of one customer (WAL, synchronous=FULL: a committed row survives a power loss).

    A commit here is followed by deletes at the suppliers (old versions, removed files), which
    they fsync: the catalog must be as durable, or after a power loss it lists versions whose
    fragments are gone. WAL with NORMAL only syncs at checkpoints; FULL syncs the log at every commit.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        if "stored" not in {row[1] for row in self.db.execute("PRAGMA table_info(blocks)")}:
            # A catalog from before the column: which positions hold what was never recorded, so
            # nothing counts as held until a read checks it (the repair reads k fragments of each
            # block and sends the others again).
            self.db.execute("ALTER TABLE blocks ADD COLUMN stored TEXT NOT NULL DEFAULT ''")
            self.db.execute("UPDATE versions SET state=? WHERE state=?", (DEGRADED, READY))

    def close(self) -> None:
        self.db.close()

    # ---- items -------------------------------------------------------------------------------

    def rename_owner(self, old_global_id: str, new_global_id: str) -> list[tuple[str, str]]:
        """Our keys `alias$<old>` become `alias$<new>` (the identity rotated); the (old, new) pairs."""
        suffix = "$" + old_global_id
        renamed = {}
        for (key_id,) in self.db.execute("SELECT DISTINCT key_id FROM items").fetchall():
            if key_id.endswith(suffix):
                renamed[key_id] = key_id[: -len(suffix)] + "$" + new_global_id
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for old, new in renamed.items():
                self.db.execute("UPDATE items SET key_id=? WHERE key_id=?", (new, old))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return list(renamed.items())

    def item(self, key_id: str, path: str) -> Item | None:
        row = self.db.execute("SELECT * FROM items WHERE key_id=? AND path=?", (key_id, path)).fetchone()
        return Item(*row) if row else None

    def item_by_id(self, item_id: int) -> Item | None:
        row = self.db.execute("SELECT * FROM items WHERE id=?", (item_id,)).fetchone()
        return Item(*row) if row else None

    def require_item(self, key_id: str, path: str) -> Item:
        found = self.item(key_id, path)
        if found is None:
            raise NotFoundError(f"path {path} was not found in the catalog", reason="remote_path_not_found")
        return found

    def create(self, key_id: str, path: str, kind: str = FILE, exist_ok: bool = False,
               owner_idurl: str = "") -> tuple[Item, bool]:
        """Create an item and its missing parent folders; (item, created)."""
        existing = self.item(key_id, path)
        if existing is not None:
            if existing.type != kind:
                raise ConflictError(f"{path} already exists as a {existing.type}", reason="remote_path_exists")
            if not exist_ok:
                raise ConflictError(f"remote path {path} already exists in the catalog: {existing.id}",
                                    reason="remote_path_exists")
            return existing, False
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            found = self.item(key_id, parent)
            if found is None:
                self._insert(key_id, parent, DIR, owner_idurl)
            elif found.type != DIR:
                raise ConflictError(f"{parent} is a file, not a folder", reason="remote_path_exists")
        return self._insert(key_id, path, kind, owner_idurl), True

    def _insert(self, key_id: str, path: str, kind: str, owner_idurl: str) -> Item:
        cur = self.db.execute("INSERT INTO items (key_id, path, type, created, owner_idurl) VALUES (?,?,?,?,?)",
                              (key_id, path, kind, time.time(), owner_idurl))
        item = self.item_by_id(int(cur.lastrowid or 0))
        assert item is not None
        return item

    def items(self, key_id: str | None = None, under: str | None = None, recursive: bool = True) -> list[Item]:
        """Items of a key (or all), optionally below folder `under`."""
        sql, args = "SELECT * FROM items", []
        if key_id is not None:
            sql, args = sql + " WHERE key_id=?", [key_id]
        found = [Item(*row) for row in self.db.execute(sql + " ORDER BY key_id, path", args)]
        if under:
            prefix = under + "/"
            found = [i for i in found if i.path.startswith(prefix)
                     and (recursive or "/" not in i.path[len(prefix):])]
        elif not recursive:
            found = [i for i in found if "/" not in i.path]
        return found

    def delete_item(self, item: Item) -> list[str]:
        """Remove an item (a folder with everything below it); the uids of the removed versions."""
        doomed = [item] + (self.items(item.key_id, item.path) if item.type == DIR else [])
        uids: list[str] = []
        for victim in doomed:
            for version in self.versions(victim.id):
                uids.append(version.uid)
                self.delete_version(version.uid)
            self.db.execute("DELETE FROM items WHERE id=?", (victim.id,))
        return uids

    def children(self, item: Item) -> int:
        return len(self.items(item.key_id, item.path, recursive=False))

    # ---- versions ----------------------------------------------------------------------------

    def add_version(self, item: Item, block_size: int, suppliers: int, wrapped_key: str, source_path: str = "",
                    uid: str | None = None, state: str = UPLOADING, size: int = 0,
                    created: float | None = None) -> Version:
        uid = uid or new_version_uid()
        self.db.execute(
            "INSERT INTO versions (uid, item_id, created, state, size, block_size, suppliers, wrapped_key, source_path)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (uid, item.id, created or time.time(), state, size, block_size, suppliers, wrapped_key, source_path))
        found = self.version(uid)
        assert found is not None
        return found

    def version(self, uid: str) -> Version | None:
        row = self.db.execute("SELECT * FROM versions WHERE uid=?", (uid,)).fetchone()
        return Version(*row) if row else None

    def versions(self, item_id: int) -> list[Version]:
        """Versions of an item, newest first."""
        rows = self.db.execute("SELECT * FROM versions WHERE item_id=? ORDER BY created DESC, uid DESC", (item_id,))
        return [Version(*row) for row in rows]

    def all_versions(self, state: str | None = None) -> list[Version]:
        sql = "SELECT * FROM versions" + (" WHERE state=?" if state else "") + " ORDER BY created"
        return [Version(*row) for row in self.db.execute(sql, (state,) if state else ())]

    def latest_ready(self, item_id: int) -> Version | None:
        """The newest version every supplier position holds whole."""
        return next((v for v in self.versions(item_id) if v.state == READY), None)

    def latest_readable(self, item_id: int) -> Version | None:
        """The newest version a download can read (`ready`, or `degraded` with k fragments per block)."""
        return next((v for v in self.versions(item_id) if v.state in READABLE), None)

    def has_state(self, state: str) -> bool:
        return self.db.execute("SELECT 1 FROM versions WHERE state=? LIMIT 1", (state,)).fetchone() is not None

    def finish_version(self, uid: str, state: str, size: int, blocks_total: int, error: str = "") -> None:
        self.db.execute("UPDATE versions SET state=?, size=?, blocks_total=?, error=? WHERE uid=?",
                        (state, size, blocks_total, error, uid))

    def settle(self, uid: str) -> str:
        """Set a finished version's state from its block rows (`ready` or `degraded`); the new state.

        A version that is uploading or failed keeps its state: only the upload ends those.
        """
        version = self.version(uid)
        if version is None or version.state not in READABLE:
            return version.state if version else ""
        health = self.health(version)
        state = READY if health.weakest >= version.suppliers and health.blocks >= version.blocks_total else DEGRADED
        if state != version.state:
            self.db.execute("UPDATE versions SET state=? WHERE uid=?", (state, uid))
        return state

    def delete_version(self, uid: str) -> None:
        self.db.execute("DELETE FROM blocks WHERE uid=?", (uid,))
        self.db.execute("DELETE FROM versions WHERE uid=?", (uid,))

    # ---- blocks ------------------------------------------------------------------------------

    def put_block(self, block: Block) -> None:
        """Store a block's row; a `stored` that does not name every position counts as none held."""
        stored = block.stored if len(block.stored) == len(block.hashes) else "0" * len(block.hashes)
        self.db.execute("INSERT OR REPLACE INTO blocks VALUES (?,?,?,?,?,?)",
                        (block.uid, block.block_no, block.plain_size, block.cipher_size,
                         codec.dumps(block.hashes).decode(), stored))

    def blocks(self, uid: str) -> list[Block]:
        rows = self.db.execute("SELECT * FROM blocks WHERE uid=? ORDER BY block_no", (uid,))
        return [_block(r) for r in rows]

    def incomplete_blocks(self, uid: str) -> list[Block]:
        """Blocks of `uid` some position does not hold (verified)."""
        rows = self.db.execute("SELECT * FROM blocks WHERE uid=? AND (stored LIKE '%0%' OR stored = '') "
                               "ORDER BY block_no", (uid,))
        return [_block(r) for r in rows]

    def iter_blocks(self) -> Iterator[Block]:
        for r in self.db.execute("SELECT * FROM blocks ORDER BY uid, block_no").fetchall():
            yield _block(r)

    # ---- which fragments are stored ------------------------------------------------------------

    def mark_stored(self, uid: str, block_no: int, positions: Iterable[int], stored: bool = True) -> None:
        """Positions of one block now hold (or no longer hold) its fragment."""
        row = self.db.execute("SELECT stored, hashes FROM blocks WHERE uid=? AND block_no=?",
                              (uid, block_no)).fetchone()
        if row is None:
            return
        n = len(codec.loads(row[1]))
        mask = list(row[0] if len(row[0]) == n else "0" * n)
        for p in positions:
            if 0 <= p < len(mask):
                mask[p] = "1" if stored else "0"
        self.db.execute("UPDATE blocks SET stored=? WHERE uid=? AND block_no=?", ("".join(mask), uid, block_no))

    def forget_position(self, position: int, suppliers: int) -> list[str]:
        """The supplier at `position` was replaced: none of our `suppliers`-wide versions' fragments
        there are held any more. Ready versions become degraded; the uids of the versions touched."""
        uids = [r[0] for r in self.db.execute(
            "SELECT uid FROM versions WHERE suppliers=? AND state IN (?,?,?)", (suppliers, READY, DEGRADED, UPLOADING))]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for uid in uids:
                self.db.execute(
                    "UPDATE blocks SET stored = substr(stored, 1, ?) || '0' || substr(stored, ?) "
                    "WHERE uid=? AND length(stored) > ?", (position, position + 2, uid, position))
                self.db.execute("UPDATE versions SET state=? WHERE uid=? AND state=?", (DEGRADED, uid, READY))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return uids

    def health(self, version: Version) -> Health:
        """Per-position verified fragments and the weakest block of `version`: one aggregate query."""
        n = max(1, min(version.suppliers, MAX_SUPPLIERS))
        held = " + ".join(f"(substr(stored, {p + 1}, 1) = '1')" for p in range(n))
        per = ", ".join(f"COALESCE(SUM(substr(stored, {p + 1}, 1) = '1'), 0)" for p in range(n))
        row = self.db.execute(f"SELECT COUNT(*), COALESCE(MIN({held}), {n}), {per} FROM blocks WHERE uid=?",
                              (version.uid,)).fetchone()
        count, weakest, per_position = int(row[0]), int(row[1]), [int(x) for x in row[2:]]
        weak_block = -1
        if weakest < n:
            found = self.db.execute(f"SELECT block_no FROM blocks WHERE uid=? ORDER BY {held}, block_no LIMIT 1",
                                    (version.uid,)).fetchone()
            weak_block = int(found[0]) if found else -1
        return Health(count, version.suppliers, per_position, weakest, weak_block)

    # ---- totals and backup ---------------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        files = self.db.execute("SELECT COUNT(*) FROM items WHERE type='file'").fetchone()[0]
        dirs = self.db.execute("SELECT COUNT(*) FROM items WHERE type='dir'").fetchone()[0]
        size = self.db.execute("SELECT COALESCE(SUM(size),0) FROM versions WHERE state IN ('ready', 'degraded')"
                               ).fetchone()[0]
        stored = self.db.execute("SELECT COALESCE(SUM(cipher_size),0) FROM blocks").fetchone()[0]
        keys = self.db.execute("SELECT COUNT(DISTINCT key_id) FROM items").fetchone()[0]
        return {"files": int(files), "folders": int(dirs), "files_size": int(size), "stored": int(stored),
                "keys": int(keys)}

    def export(self, key_id: str) -> dict[str, Any]:
        """Everything under `key_id` a download can read: the document the catalog backup carries.

        Each block is `[block_no, plain_size, cipher_size, hashes, stored]`.
        """
        items = []
        for item in self.items(key_id):
            versions = []
            for v in self.versions(item.id):
                if v.state not in READABLE:
                    continue
                versions.append({"uid": v.uid, "created": v.created, "size": v.size, "block_size": v.block_size,
                                 "suppliers": v.suppliers, "wrapped_key": v.wrapped_key,
                                 "blocks": [[b.block_no, b.plain_size, b.cipher_size, b.hashes, b.stored]
                                            for b in self.blocks(v.uid)]})
            items.append({"path": item.path, "type": item.type, "created": item.created, "versions": versions})
        return {"key_id": key_id, "items": items, "exported": time.time()}

    def import_index(self, doc: dict[str, Any], owner_idurl: str = "") -> int:
        """Add what a catalog backup holds and this catalog lacks; the number of versions added."""
        key_id = str(doc.get("key_id") or "")
        added = 0
        for entry in doc.get("items") or []:
            path = normalize_path(str(entry.get("path") or ""))
            kind = DIR if entry.get("type") == DIR else FILE
            item, _ = self.create(key_id, path, kind, exist_ok=True, owner_idurl=owner_idurl)
            for v in entry.get("versions") or []:
                uid = str(v.get("uid") or "")
                if not uid or self.version(uid) is not None:
                    continue
                self.add_version(item, int(v["block_size"]), int(v["suppliers"]), str(v["wrapped_key"]),
                                 uid=uid, state=READY, size=int(v["size"]), created=float(v.get("created") or 0))
                blocks = v.get("blocks") or []
                n = int(v["suppliers"])
                for row in blocks:
                    block_no, plain_size, cipher_size, hashes = row[:4]
                    # A backup without the column predates it: its versions were stored whole.
                    stored = str(row[4]) if len(row) > 4 else "1" * n
                    if len(stored) != n or set(stored) - {"0", "1"}:
                        stored = "0" * n
                    self.put_block(Block(uid, int(block_no), int(plain_size), int(cipher_size), list(hashes),
                                         stored))
                self.finish_version(uid, READY, int(v["size"]), len(blocks))
                self.settle(uid)
                added += 1
        return added


def _block(row: Any) -> Block:
    hashes = list(codec.loads(row[4]))
    stored = row[5] if len(row[5]) == len(hashes) else "0" * len(hashes)
    return Block(row[0], row[1], row[2], row[3], hashes, stored)
