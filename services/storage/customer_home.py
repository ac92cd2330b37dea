"""Whose the customer state on this node is, and how it ends when that identity leaves.

The customer state (catalog, suppliers list, everything under `state/storage/customer/`) belongs
to one identity. When that identity is erased or taken over, the state goes with it: a node that
kept it would show the next identity (a recovered one) someone else's suppliers and files, and
skip restoring that identity's own. The folder is claimed by the SHA-256 of the owner's public
key in `owner` (a rotation keeps the key, so it keeps the claim); a storage process that missed
the erase (stopped at the time) still sees another key at its next round and ends the state then.

Ending is one rename (`customer` -> `customer.erased-<ns>`, parent folder fsynced), then a delete
that may run in the background: a crash before the rename keeps the state (the next round ends
it again), a crash after it leaves only a folder `discard_set_aside` removes at the next start.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from common.fsutil import atomic_write, fsync_dir

OWNER_FILE = "owner"
ERASED_SUFFIX = ".erased-"


def owner_key(publickey: str) -> str:
    """The claim an identity puts on the folder: SHA-256 of its public key text."""
    return hashlib.sha256(publickey.encode()).hexdigest()


def owner_of(folder: Path) -> str | None:
    """The claim on `folder`, None when there is none (a fresh home, or one from before claims)."""
    try:
        return (folder / OWNER_FILE).read_text().strip() or None
    except OSError:
        return None


def claim(folder: Path, key: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / OWNER_FILE, key + "\n", mode=0o600)


def set_aside(folder: Path) -> Path | None:
    """Move the state out of the way in one durable rename; the folder to delete, None if absent."""
    if not folder.exists():
        return None
    trash = folder.with_name(f"{folder.name}{ERASED_SUFFIX}{time.time_ns()}")
    folder.rename(trash)
    fsync_dir(folder.parent)
    return trash


def discard_set_aside(folder: Path) -> None:
    """Delete what earlier `set_aside` calls left (a crash between the rename and the delete)."""
    if not folder.parent.is_dir():
        return
    for trash in folder.parent.glob(f"{folder.name}{ERASED_SUFFIX}*"):
        shutil.rmtree(trash, ignore_errors=True)
