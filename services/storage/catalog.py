"""The customer's catalog: remote paths, their versions and the blocks of each version (sqlite).

A remote path is `key_id:path` (`master$alice@host_port:docs/a.txt`); items are unique per key
and path, folders are items of type `dir`. A version is one upload of a file: a random `uid`
(which also prefixes its fragments' names on the suppliers), a state (`uploading`, `ready`,
`failed`), the session key wrapped for the item's key, and one row per block with the sha256 of
each of its N fragments, so a reader can check every fragment a supplier hands back.

`export`/`import_index` turn everything under one key into a JSON document and back: the catalog
backup stored on the suppliers (encrypted and signed by the caller).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from common import codec
from common.errors import ConflictError, InvalidArgumentError, NotFoundError

UPLOADING, READY, FAILED = "uploading", "ready", "failed"
FILE, DIR = "file", "dir"
MAX_PATH = 1024

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
    hashes TEXT NOT NULL, PRIMARY KEY (uid, block_no));
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
        return next((v for v in self.versions(item_id) if v.state == READY), None)

    def finish_version(self, uid: str, state: str, size: int, blocks_total: int, error: str = "") -> None:
        self.db.execute("UPDATE versions SET state=?, size=?, blocks_total=?, error=? WHERE uid=?",
                        (state, size, blocks_total, error, uid))

    def delete_version(self, uid: str) -> None:
        self.db.execute("DELETE FROM blocks WHERE uid=?", (uid,))
        self.db.execute("DELETE FROM versions WHERE uid=?", (uid,))

    # ---- blocks ------------------------------------------------------------------------------

    def put_block(self, block: Block) -> None:
        self.db.execute("INSERT OR REPLACE INTO blocks VALUES (?,?,?,?,?)",
                        (block.uid, block.block_no, block.plain_size, block.cipher_size,
                         codec.dumps(block.hashes).decode()))

    def blocks(self, uid: str) -> list[Block]:
        rows = self.db.execute("SELECT * FROM blocks WHERE uid=? ORDER BY block_no", (uid,))
        return [Block(r[0], r[1], r[2], r[3], list(codec.loads(r[4]))) for r in rows]

    def iter_blocks(self) -> Iterator[Block]:
        for r in self.db.execute("SELECT * FROM blocks ORDER BY uid, block_no").fetchall():
            yield Block(r[0], r[1], r[2], r[3], list(codec.loads(r[4])))

    # ---- totals and backup ---------------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        files = self.db.execute("SELECT COUNT(*) FROM items WHERE type='file'").fetchone()[0]
        dirs = self.db.execute("SELECT COUNT(*) FROM items WHERE type='dir'").fetchone()[0]
        size = self.db.execute("SELECT COALESCE(SUM(size),0) FROM versions WHERE state='ready'").fetchone()[0]
        stored = self.db.execute("SELECT COALESCE(SUM(cipher_size),0) FROM blocks").fetchone()[0]
        keys = self.db.execute("SELECT COUNT(DISTINCT key_id) FROM items").fetchone()[0]
        return {"files": int(files), "folders": int(dirs), "files_size": int(size), "stored": int(stored),
                "keys": int(keys)}

    def export(self, key_id: str) -> dict[str, Any]:
        """Everything under `key_id` that is ready: the document the catalog backup carries."""
        items = []
        for item in self.items(key_id):
            versions = []
            for v in self.versions(item.id):
                if v.state != READY:
                    continue
                versions.append({"uid": v.uid, "created": v.created, "size": v.size, "block_size": v.block_size,
                                 "suppliers": v.suppliers, "wrapped_key": v.wrapped_key,
                                 "blocks": [[b.block_no, b.plain_size, b.cipher_size, b.hashes]
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
                for block_no, plain_size, cipher_size, hashes in blocks:
                    self.put_block(Block(uid, int(block_no), int(plain_size), int(cipher_size), list(hashes)))
                self.finish_version(uid, READY, int(v["size"]), len(blocks))
                added += 1
        return added
