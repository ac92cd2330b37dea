"""A supplier's on-disk store: customers' fragments as files, their index in sqlite.

Layout under the supplier's state folder:

    fragments/<sha256(customer idurl)[:32]>/<object name>   the bytes, exactly as received
    supplier.sqlite                                          contracts, objects, grants, pending

The file is the truth and the row its index. A stored object lands in three durable steps: a
`pending` row (name, size, sha256), `os.replace` of the fsynced spool file onto the final path
followed by an fsync of the folder, then one transaction that moves the row from `pending` to
`objects`. A new name (no row yet) skips the `pending` row: a file without a row is indexed by
`reconcile()` anyway. A SIGKILL between any two steps leaves a state that `reconcile()` repairs at
the next start:

- a pending row whose final file hashes to it: the rename happened, commit the row;
- any other pending row: the rename did not happen, drop it (an older object is still intact);
- a final file without a row (or of another size): it was renamed durably, hash it, index it;
- a row without a file: a delete was cut short, drop the row;
- a contract marked `erasing`, or a folder no contract owns: finish the erase.

Every method blocks (fsync, hashing, commits with synchronous=FULL): async callers run the writing
ones in `asyncio.to_thread`. Writes are serialised by one lock; reads go through a second
connection, which WAL lets run beside a writer, so a read on the event loop never waits for an
fsync. Contracts and per-customer usage are cached in memory and updated with each commit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, TypeGuard

from common.errors import InvalidArgumentError
from common.fsutil import fsync_dir

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}")
"""An object name: it is also a file name, so no separator and no leading dot can ever pass."""

ACTIVE = "active"
ERASING = "erasing"

_CHUNK = 1 << 20
_NAME_END = "\x7f"  # sorts after every character a name may hold: [prefix, prefix + _NAME_END) is a prefix range

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contracts (
    idurl TEXT PRIMARY KEY, folder TEXT NOT NULL UNIQUE, allocated INTEGER NOT NULL, since REAL NOT NULL,
    ecc_map TEXT NOT NULL, position INTEGER NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    customer TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    stored_at REAL NOT NULL, PRIMARY KEY (customer, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    customer TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (customer, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (
    customer TEXT NOT NULL, grantee TEXT NOT NULL, prefix TEXT NOT NULL,
    PRIMARY KEY (customer, grantee, prefix)) WITHOUT ROWID;
"""


def is_valid_name(name: object) -> TypeGuard[str]:
    """True for a string that may name a stored object (and a non-empty prefix of one)."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def folder_name(customer: str) -> str:
    """The customer's folder under `fragments/`: fixed length, never derived from raw input."""
    return hashlib.sha256(customer.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Contract:
    """What a supplier promised one customer."""

    idurl: str
    allocated: int
    since: float
    ecc_map: str
    position: int
    state: str = ACTIVE


@dataclass(frozen=True)
class StoredObject:
    """One object as indexed: its name, size and the sha256 of its bytes (hex)."""

    name: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


class FragmentStore:
    """Customers' objects on disk with their sqlite index; blocking, thread-safe."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.fragments = self.root / "fragments"
        self.fragments.mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(self.root)
        db_path = str(self.root / "supplier.sqlite")
        self._write_lock = threading.RLock()
        self._read_lock = threading.Lock()
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._reader = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._contracts: dict[str, Contract] = {}
        self._folders: dict[str, str] = {}
        self._usage: dict[str, tuple[int, int]] = {}
        self._load_caches()

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._reader.close()
            self._db.close()

    # --- contracts ---------------------------------------------------------------------------

    def contract(self, customer: str) -> Contract | None:
        """The active contract of `customer`, or None."""
        found = self._contracts.get(customer)
        return found if found is not None and found.state == ACTIVE else None

    def contracts(self) -> list[Contract]:
        """Every active contract, oldest first."""
        return sorted((c for c in self._contracts.values() if c.state == ACTIVE), key=lambda c: (c.since, c.idurl))

    def save_contract(self, contract: Contract) -> None:
        """Create or update an active contract."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO contracts VALUES (?,?,?,?,?,?,?)",
                (contract.idurl, self._folder(contract.idurl), contract.allocated, contract.since,
                 contract.ecc_map, contract.position, ACTIVE),
            )
            self._contracts[contract.idurl] = Contract(
                contract.idurl, contract.allocated, contract.since, contract.ecc_map, contract.position, ACTIVE)
            self._folders[contract.idurl] = self._folder(contract.idurl)

    def rename_customer(self, old: str, new: str) -> bool:
        """The customer `old` is now `new` (its identity moved): one transaction, no file moves.

        The folder keeps its name (the contract row records it), so a crash leaves either the old
        name or the new one, each complete. False when `old` has no contract or `new` has one.
        """
        with self._write_lock:
            if old not in self._contracts or new in self._contracts:
                return False
            with self._tx() as db:
                db.execute("UPDATE contracts SET idurl=? WHERE idurl=?", (new, old))
                for table in ("objects", "pending", "grants"):
                    db.execute(f"UPDATE {table} SET customer=? WHERE customer=?", (new, old))
            self._load_caches()
        return True

    def _folder(self, customer: str) -> str:
        """The customer's folder: the one its contract records (kept through renames), else derived."""
        return self._folders.get(customer) or folder_name(customer)

    def erase_customer(self, customer: str) -> tuple[int, int]:
        """Drop the contract, the grants and every object of `customer`; (objects, bytes) erased.

        The contract is first marked `erasing`, so an erase cut short is finished at the next start
        instead of leaving files nobody accounts for.
        """
        with self._tx() as db:
            db.execute("UPDATE contracts SET state=? WHERE idurl=?", (ERASING, customer))
            old = self._contracts.get(customer)
            if old is not None:
                self._contracts[customer] = Contract(
                    old.idurl, old.allocated, old.since, old.ecc_map, old.position, ERASING)
        count, size = self._usage.get(customer, (0, 0))
        _remove_tree(self.fragments / self._folder(customer))
        fsync_dir(self.fragments)
        with self._tx() as db:
            for table in ("objects", "pending", "grants"):
                db.execute(f"DELETE FROM {table} WHERE customer=?", (customer,))
            db.execute("DELETE FROM contracts WHERE idurl=?", (customer,))
            self._contracts.pop(customer, None)
            self._folders.pop(customer, None)
            self._usage.pop(customer, None)
        return count, size

    # --- objects -----------------------------------------------------------------------------

    def used_bytes(self, customer: str) -> int:
        return self._usage.get(customer, (0, 0))[1]

    def object_count(self, customer: str) -> int:
        return self._usage.get(customer, (0, 0))[0]

    def path_of(self, customer: str, name: str) -> Path:
        """The final path of an object; raises `InvalidArgumentError` (bad_name) for a bad name."""
        if not is_valid_name(name):
            raise InvalidArgumentError(f"invalid object name {name!r:.80}", reason="bad_name")
        return self.fragments / self._folder(customer) / name

    def get(self, customer: str, name: str) -> StoredObject | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT name, size, sha256 FROM objects WHERE customer=? AND name=?", (customer, name)).fetchone()
        return StoredObject(*row) if row else None

    def objects(self, customer: str, prefix: str = "", after: str = "", limit: int | None = None) -> list[StoredObject]:
        """Objects of `customer` whose name starts with `prefix`, by name, after `after`."""
        low = max(prefix, after)
        sql = "SELECT name, size, sha256 FROM objects WHERE customer=? AND name>=? AND name<? AND name>? ORDER BY name"
        args: list[object] = [customer, low, prefix + _NAME_END, after]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._read_lock:
            rows = self._reader.execute(sql, args).fetchall()
        return [StoredObject(*row) for row in rows]

    def store(self, customer: str, name: str, spool: str, size: int, sha256: str) -> StoredObject:
        """Move the spool file in as `name`, durably; return what is now indexed.

        `sha256` is the transport's hash of the bytes it wrote to the spool file (checked against
        the sender's signature), so it is recorded, not recomputed.

        Raises:
            InvalidArgumentError: reason `bad_payload` when the spool file is missing, is not a
                regular file, lies inside the store, or its size differs from the claim.
        """
        final = self.path_of(customer, name)
        self._check_spool(spool, size)
        folder = final.parent
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            fsync_dir(self.fragments)
        # Replacing an indexed object needs the pending row: the old row would otherwise survive a
        # crash right after the rename and describe the new bytes (reconcile rehashes by size only).
        replacing = self.get(customer, name) is not None
        if replacing:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO pending VALUES (?,?,?,?)", (customer, name, size, sha256))
        try:
            os.replace(spool, final)
            fsync_dir(folder)
        except BaseException:
            if replacing:
                with self._tx() as db:
                    db.execute("DELETE FROM pending WHERE customer=? AND name=?", (customer, name))
            raise
        with self._tx() as db:
            self._index(db, customer, name, size, sha256)
            if replacing:
                db.execute("DELETE FROM pending WHERE customer=? AND name=?", (customer, name))
        return StoredObject(name, size, sha256)

    def delete(self, customer: str, names: Iterable[str]) -> int:
        """Delete those of `names` that `customer` has; the count deleted."""
        wanted = sorted(set(names))
        with self._write_lock:
            found = [n for n in wanted if self._db.execute(
                "SELECT 1 FROM objects WHERE customer=? AND name=?", (customer, n)).fetchone()]
        return self._delete_found(customer, found)

    def delete_prefix(self, customer: str, prefix: str) -> int:
        """Delete every object of `customer` whose name starts with `prefix`; the count deleted."""
        with self._write_lock:
            found = [row[0] for row in self._db.execute(
                "SELECT name FROM objects WHERE customer=? AND name>=? AND name<?",
                (customer, prefix, prefix + _NAME_END))]
        return self._delete_found(customer, found)

    # --- read grants -------------------------------------------------------------------------

    def grant(self, customer: str, grantee: str, prefix: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO grants VALUES (?,?,?)", (customer, grantee, prefix))

    def revoke(self, customer: str, grantee: str, prefix: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM grants WHERE customer=? AND grantee=? AND prefix=?", (customer, grantee, prefix))

    def grants(self, customer: str, grantee: str) -> list[str]:
        """The name prefixes `customer` lets `grantee` read."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT prefix FROM grants WHERE customer=? AND grantee=? ORDER BY prefix", (customer, grantee))
            return [row[0] for row in rows]

    def grant_count(self, customer: str) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COUNT(*) FROM grants WHERE customer=?", (customer,)).fetchone()[0])

    # --- crash recovery ----------------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Make disk and index agree after a crash (see the module docstring); counts of repairs."""
        repaired: Counter[str] = Counter()
        with self._write_lock:
            self._settle_pending(repaired)
            for contract in [c for c in self._contracts.values() if c.state == ERASING]:
                self.erase_customer(contract.idurl)
                repaired["erase_finished"] += 1
            owners = {self._folder(c.idurl): c.idurl for c in self._contracts.values()}
            with os.scandir(self.fragments) as entries:
                for entry in entries:
                    owner = owners.get(entry.name)
                    if owner is None or not entry.is_dir(follow_symlinks=False):
                        _remove_tree(Path(entry.path))
                        repaired["orphans_removed"] += 1
                    else:
                        self._reconcile_folder(owner, Path(entry.path), repaired)
            with self._tx() as db:
                repaired["rows_dropped"] += db.execute(
                    "DELETE FROM objects WHERE customer NOT IN (SELECT idurl FROM contracts)").rowcount
                db.execute("DELETE FROM grants WHERE customer NOT IN (SELECT idurl FROM contracts)")
            self._load_caches()
        result = {k: v for k, v in repaired.items() if v}
        if result:
            log.warning("supplier store repaired after an unclean stop: %s", result)
        return result

    def _settle_pending(self, repaired: Counter[str]) -> None:
        for customer, name, size, sha256 in self._db.execute("SELECT * FROM pending").fetchall():
            path = self.fragments / self._folder(customer) / name
            landed = is_valid_name(name) and path.is_file() and _hash_file(path) == (size, sha256)
            with self._tx() as db:
                if landed:
                    self._index(db, customer, name, size, sha256)
                db.execute("DELETE FROM pending WHERE customer=? AND name=?", (customer, name))
            repaired["pending_committed" if landed else "pending_dropped"] += 1

    def _reconcile_folder(self, customer: str, folder: Path, repaired: Counter[str]) -> None:
        rows = {name: size for name, size in self._db.execute(
            "SELECT name, size FROM objects WHERE customer=?", (customer,))}
        on_disk: set[str] = set()
        with os.scandir(folder) as entries:
            for entry in entries:
                if not is_valid_name(entry.name) or not entry.is_file(follow_symlinks=False):
                    _remove_tree(Path(entry.path))
                    repaired["strays_removed"] += 1
                    continue
                on_disk.add(entry.name)
                if rows.get(entry.name) != entry.stat(follow_symlinks=False).st_size:
                    size, sha256 = _hash_file(Path(entry.path))
                    with self._tx() as db:
                        self._index(db, customer, entry.name, size, sha256)
                    repaired["rows_added"] += 1
        missing = [name for name in rows if name not in on_disk]
        if missing:
            with self._tx() as db:
                db.executemany("DELETE FROM objects WHERE customer=? AND name=?", [(customer, n) for n in missing])
            repaired["rows_dropped"] += len(missing)

    # --- internals ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _index(self, db: sqlite3.Connection, customer: str, name: str, size: int, sha256: str) -> None:
        old = db.execute("SELECT size FROM objects WHERE customer=? AND name=?", (customer, name)).fetchone()
        db.execute("INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?)", (customer, name, size, sha256, time.time()))
        count, used = self._usage.get(customer, (0, 0))
        if old is None:
            self._usage[customer] = (count + 1, used + size)
        else:
            self._usage[customer] = (count, used - int(old[0]) + size)

    def _delete_found(self, customer: str, names: list[str]) -> int:
        if not names:
            return 0
        folder = self.fragments / self._folder(customer)
        for name in names:
            try:
                os.unlink(folder / name)
            except FileNotFoundError:
                pass
        fsync_dir(folder)
        deleted = freed = 0
        with self._tx() as db:
            for name in names:
                row = db.execute("SELECT size FROM objects WHERE customer=? AND name=?", (customer, name)).fetchone()
                if row is not None:
                    deleted += 1
                    freed += int(row[0])
                    db.execute("DELETE FROM objects WHERE customer=? AND name=?", (customer, name))
            count, used = self._usage.get(customer, (0, 0))
            self._usage[customer] = (count - deleted, used - freed)
        return deleted

    def _check_spool(self, spool: str, size: int) -> None:
        """Check the spool file is a regular file of `size` bytes outside the store, and fsync it.

        Its sha256 is not computed again: the transport hashed these bytes as they arrived and
        checked that hash against the customer's packet signature, then wrote them to this file.
        """
        real = os.path.realpath(spool)
        if not os.path.isabs(spool) or os.path.commonpath([real, self._real_root]) == self._real_root:
            raise InvalidArgumentError("payload file is not in the spool", reason="bad_payload")
        try:
            fd = os.open(spool, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise InvalidArgumentError(f"payload file unreadable: {exc.strerror}", reason="bad_payload") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != size:
                raise InvalidArgumentError(
                    f"payload file holds {info.st_size} bytes, not {size}", reason="bad_payload")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _load_caches(self) -> None:
        with self._write_lock:
            rows = self._db.execute("SELECT * FROM contracts").fetchall()
            self._contracts = {
                row[0]: Contract(row[0], int(row[2]), float(row[3]), row[4], int(row[5]), row[6]) for row in rows
            }
            self._folders = {row[0]: row[1] for row in rows}
            self._usage = {
                row[0]: (int(row[1]), int(row[2]))
                for row in self._db.execute("SELECT customer, COUNT(*), SUM(size) FROM objects GROUP BY customer")
            }


def _hash_stream(fh: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    total = 0
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total


def _hash_file(path: Path) -> tuple[int, str]:
    with open(path, "rb") as fh:
        digest, size = _hash_stream(fh)
    return size, digest


def _remove_tree(path: Path) -> None:
    """Remove a file or a folder, whichever it is; gone already is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
