"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of folder `path` durable: a rename into it survives a crash once this returns."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def user_path(text: object, name: str) -> Path:
    """A local path an API client gave, expanded and made absolute; raises `InvalidArgumentError`.

    Refuses what the OS would fail on in odd ways (NUL bytes, names or paths over the system
    limits), so a hostile value is a clear 400, not an error deep in a handler.
    """
    from common.errors import InvalidArgumentError  # errors imports nothing from here; kept local anyway

    raw = str(text or "")
    try:
        encoded = os.fsencode(raw)
    except UnicodeError:
        raise InvalidArgumentError(f"{name} is not a valid path", reason="invalid_path") from None
    if not raw.strip() or b"\0" in encoded or len(encoded) > MAX_PATH_BYTES or \
            any(len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")):
        raise InvalidArgumentError(f"{name} is not a valid path", reason="invalid_path")
    try:
        return Path(os.path.expanduser(raw)).resolve()
    except (OSError, RuntimeError, ValueError):
        raise InvalidArgumentError(f"{name} cannot be resolved", reason="invalid_path") from None


def open_sqlite(path: Path, schema: str, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A WAL sqlite database at `path` (its folder made), rows as `sqlite3.Row`, `schema` applied.

    Autocommit mode (callers open their own transactions); usable from worker threads.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
    db.executescript(schema)
    return db
