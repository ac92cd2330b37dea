"""The spool: files through which processes of one node hand bulk payloads to each other.

Data fragments (1-8 MiB) do not cross the local bus: the process that has the bytes writes them to
a new file in `<home>/spool/` and sends only its path (and SHA-256) on the bus; the receiver reads
the file, or renames it into place (the spool is on the same filesystem as the state folders).
Whoever is handed a spool file owns it and deletes it when done; `sweep` removes the leftovers of
a crash. Files are created 0600 under unique names and are never fsynced here: a process that
keeps one as data calls `os.fsync` itself before it acknowledges it.

Plain blocking file code (call it through `asyncio.to_thread` from a coroutine); no bus in it.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Union

from common.errors import InvalidArgumentError, NotFoundError

Buffer = Union[bytes, bytearray, memoryview]

FILE_MODE = 0o600
STALE_AFTER = 3600.0
"""Seconds after which a spool file is a leftover that `sweep` removes."""


def new_path(folder: Path, prefix: str) -> Path:
    """A fresh, unguessable file name in `folder`, e.g. `in-<32 hex digits>`."""
    return folder / f"{prefix}-{secrets.token_hex(16)}"


def write_new(folder: Path, data: Buffer, prefix: str = "in") -> Path:
    """Write `data` to a new file in `folder` (mode 0600, never an existing file) and return its path."""
    path = new_path(folder, prefix)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        remove(path)
        raise
    os.close(fd)
    return path


def read_file(path: Path, max_size: int | None = None) -> bytearray:
    """The whole content of a regular file.

    Raises:
        NotFoundError: no such file (reason `file_not_found`).
        InvalidArgumentError: not a regular file (`invalid_path`), larger than `max_size`
            (`payload_too_large`).
    """
    try:
        fh = open(path, "rb", buffering=0)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"{path} does not exist", reason="file_not_found") from None
    except IsADirectoryError:
        raise InvalidArgumentError(f"{path} is not a regular file", reason="invalid_path") from None
    with fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgumentError(f"{path} is not a regular file", reason="invalid_path")
        if max_size is not None and info.st_size > max_size:
            raise InvalidArgumentError(f"{path} is larger than {max_size} bytes", reason="payload_too_large")
        buf = bytearray(info.st_size)
        view, got = memoryview(buf), 0
        while got < len(buf):
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
        return buf if got == len(buf) else buf[:got]


def resolve_inside(path: str | os.PathLike[str], roots: Iterable[Path]) -> Path:
    """`path` with symlinks resolved, if it is absolute and lies inside one of `roots`.

    Raises:
        InvalidArgumentError: reason `invalid_path` for anything else.
    """
    given = Path(path)
    if not given.is_absolute():
        raise InvalidArgumentError(f"{path} is not an absolute path", reason="invalid_path")
    real = Path(os.path.realpath(given))
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return real
    raise InvalidArgumentError(f"{path} is outside the folders files may be sent from", reason="invalid_path")


def remove(path: Path) -> bool:
    """Delete `path` if it is still there; True if it was."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def sweep(folder: Path, max_age: float = STALE_AFTER, now: float | None = None) -> int:
    """Delete files in `folder` last modified more than `max_age` seconds ago; return how many."""
    cutoff = (time.time() if now is None else now) - max_age
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
