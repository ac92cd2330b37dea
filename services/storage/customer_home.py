"""Whose the customer state on this node is, and how it ends when that identity leaves.

The customer state (catalog, suppliers list, everything under `state/storage/customer/`) belongs
to one identity. When that identity is erased or taken over, the state goes with it: a node that
kept it would show the next identity (a recovered one) someone else's suppliers and files, and
skip restoring that identity's own. The folder is claimed in `owner` by the owner's IDURL and the
SHA-256 of its public key; a storage process that missed the erase (stopped at the time) sees
another claimant at its next round and ends the state then. The same key under a new IDURL is
the same owner only when the new document lists the claimed IDURL among its sources (a rotation);
an identity created afresh with a kept key is another owner.

Ending is one rename (`customer` -> `customer.erased-<ns>`, parent folder fsynced), then a delete
that may run in the background: a crash before the rename keeps the state (the next round ends
it again), a crash after it leaves only a folder `discard_set_aside` removes at the next start.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

from common import codec
from common.fsutil import atomic_write, fsync_dir

OWNER_FILE = "owner"
ERASED_SUFFIX = ".erased-"


def owner_key(publickey: str) -> str:
    """SHA-256 of an identity's public key text."""
    return hashlib.sha256(publickey.encode()).hexdigest()


def claim_of(me: dict[str, Any]) -> dict[str, str]:
    """The claim the identity `me` (idurl, publickey) puts on the folder."""
    return {"idurl": str(me["idurl"]), "key": owner_key(str(me["publickey"]))}


def owner_of(folder: Path) -> dict[str, str] | None:
    """The claim on `folder`, None when there is none (a fresh home, or one from before claims)."""
    try:
        doc = codec.loads((folder / OWNER_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not doc.get("idurl") or not doc.get("key"):
        return None
    return {"idurl": str(doc["idurl"]), "key": str(doc["key"])}


def same_owner(claim: dict[str, str], me: dict[str, Any]) -> bool:
    """Is `me` the identity that made `claim` (itself, or itself rotated to a new IDURL)?"""
    mine = claim_of(me)
    return claim["key"] == mine["key"] and (claim["idurl"] == mine["idurl"]
                                            or claim["idurl"] in (me.get("sources") or ()))


def claim(folder: Path, me: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / OWNER_FILE, codec.dumps(claim_of(me)), mode=0o600)


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
