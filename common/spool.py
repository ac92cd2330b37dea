"""The spool: files through which processes of one node hand bulk payloads to each other.

Data fragments (1-8 MiB) do not cross the local bus: the process that has the bytes writes them to
a new file in `<home>/spool/` and sends only its path (and SHA-256) on the bus; the receiver reads
the file, or renames it into place (the spool is on the same filesystem as the state folders).
Whoever is handed a spool file owns it and deletes it when done; `sweep` removes the leftovers of
a crash. Files are created 0600 under unique names and are never fsynced here: a process that
keeps one as data calls `os.fsync` itself before it acknowledges it.

Large payloads are written with `O_DIRECT` through reused page-aligned `StagingBuffers` when the
filesystem allows it: an arrived fragment is usually kept (renamed into a supplier's store), and
filling fresh page-cache pages costs several times the copy into a warm buffer plus the DMA.

Plain blocking file code (call it through `asyncio.to_thread` from a coroutine); no bus in it.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

from common.errors import InvalidArgumentError, NotFoundError

Buffer = Union[bytes, bytearray, memoryview]

FILE_MODE = 0o600
STALE_AFTER = 3600.0
"""Seconds after which a spool file is a leftover that `sweep` removes."""


DIRECT_ALIGN = 4096
"""File offsets, lengths and buffer addresses of direct I/O are multiples of this."""
DIRECT_MIN = 256 * 1024
"""Payloads smaller than this are written through the page cache."""


class StagingBuffers:
    """Page-aligned buffers for direct I/O, reused so their pages are faulted in only once.

    Thread-safe; at most `keep` idle buffers are kept, more are made (and dropped) on demand.
    """

    def __init__(self, size: int = 2 * 1024 * 1024, keep: int = 4):
        if size <= 0 or size % DIRECT_ALIGN:
            raise ValueError(f"size must be a positive multiple of {DIRECT_ALIGN}")
        self.size = size
        self.keep = keep
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self) -> Iterator[mmap.mmap]:
        with self._lock:
            buf = self._idle.pop() if self._idle else None
        if buf is None:
            buf = mmap.mmap(-1, self.size)
        try:
            yield buf
        finally:
            with self._lock:
                if len(self._idle) < self.keep:
                    self._idle.append(buf)
                    buf = None
            if buf is not None:
                buf.close()


def new_path(folder: Path, prefix: str) -> Path:
    """A fresh, unguessable file name in `folder`, e.g. `in-<32 hex digits>`."""
    return folder / f"{prefix}-{secrets.token_hex(16)}"


def write_new(folder: Path, data: Buffer, prefix: str = "in", staging: StagingBuffers | None = None) -> Path:
    """Write `data` to a new file in `folder` (mode 0600, never an existing file) and return its path.

    With `staging`, a payload of `DIRECT_MIN` bytes or more bypasses the page cache (`O_DIRECT`)
    where the filesystem supports it; the content is the same either way.
    """
    path = new_path(folder, prefix)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    view = memoryview(data).cast("B")
    direct = staging is not None and len(view) >= DIRECT_MIN and hasattr(os, "O_DIRECT")
    fd = -1
    try:
        if direct:
            try:
                fd = os.open(path, flags | os.O_DIRECT, FILE_MODE)
            except OSError as err:
                if err.errno != errno.EINVAL:  # tmpfs and others refuse O_DIRECT
                    raise
        if fd < 0:
            fd = os.open(path, flags, FILE_MODE)
            _write_all(fd, view)
        else:
            assert staging is not None
            try:
                _write_direct(fd, view, staging)
                if len(view) % DIRECT_ALIGN:
                    os.ftruncate(fd, len(view))
            except OSError as err:
                if err.errno != errno.EINVAL:  # an alignment this filesystem does not take
                    raise
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                _write_all(fd, view)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        remove(path)
        raise
    os.close(fd)
    return path


def write_at(fd: int, data: Buffer, offset: int, staging: StagingBuffers | None = None) -> None:
    """Write `data` at `offset` of an open file; past the page cache (`O_DIRECT`) when it can.

    A direct write at an aligned offset may leave zeros past `offset + len(data)` (up to the next
    `DIRECT_ALIGN` boundary): the caller truncates the file to its final size at the end.
    """
    view = memoryview(data).cast("B")
    if staging is not None and len(view) >= DIRECT_MIN and offset % DIRECT_ALIGN == 0 and hasattr(os, "O_DIRECT"):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
            _write_direct(fd, view, staging, offset)
            return
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _write_direct(fd: int, view: memoryview, staging: StagingBuffers, at: int = 0) -> None:
    """Copy `view` through an aligned buffer into `fd` (in O_DIRECT mode) at offset `at` (aligned);
    the last chunk is padded with zeros to the alignment."""
    total = len(view)
    with staging.borrow() as buf:
        out = memoryview(buf)
        try:
            offset = 0
            while offset < total:
                count = min(len(out), total - offset)
                out[:count] = view[offset:offset + count]
                padded = -(-count // DIRECT_ALIGN) * DIRECT_ALIGN
                if padded > count:
                    out[count:padded] = bytes(padded - count)
                written = 0
                while written < padded:
                    written += os.pwrite(fd, out[written:padded], at + offset + written)
                offset += count
        finally:
            out.release()


def read_file(path: Path, max_size: int | None = None, direct: bool = False) -> Buffer:
    """The whole content of a regular file.

    With `direct`, a file of `DIRECT_MIN` bytes or more is read past the page cache (`O_DIRECT`)
    into fresh page-aligned memory where the filesystem allows it: for a stored fragment that is
    sent once and not read again soon.

    Raises:
        NotFoundError: no such file (reason `file_not_found`).
        InvalidArgumentError: not a regular file (`invalid_path`), larger than `max_size`
            (`payload_too_large`).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"{path} does not exist", reason="file_not_found") from None
    except IsADirectoryError:
        raise InvalidArgumentError(f"{path} is not a regular file", reason="invalid_path") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgumentError(f"{path} is not a regular file", reason="invalid_path")
        if max_size is not None and info.st_size > max_size:
            raise InvalidArgumentError(f"{path} is larger than {max_size} bytes", reason="payload_too_large")
        if direct and info.st_size >= DIRECT_MIN and hasattr(os, "O_DIRECT"):
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
            else:
                return _read_direct(fd, info.st_size)
        # os.pread fills a new bytes object without zeroing it first.
        data = os.pread(fd, info.st_size, 0)
        while len(data) < info.st_size:
            more = os.pread(fd, info.st_size - len(data), len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def _read_direct(fd: int, size: int) -> memoryview:
    """Up to `size` bytes from offset 0 of `fd` (in O_DIRECT mode), into fresh page-aligned memory."""
    view = memoryview(mmap.mmap(-1, max(DIRECT_ALIGN, -(-size // DIRECT_ALIGN) * DIRECT_ALIGN)))
    got = 0
    while got < len(view):
        count = os.preadv(fd, [view[got:]], got)
        if not count:
            break
        got += count
        if got % DIRECT_ALIGN:
            break  # a short direct read ends the file
    return view[:min(got, size)]


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
