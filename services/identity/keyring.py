"""The node's keys on disk: the master key and every other key it created or was given.

Private keys live only here, in files of mode 0600 under `<state>/identity/keys/`. The master
key is kept apart (`master.pem`) because its key id follows the identity (`master$<global id>`)
and changes when the identity moves to another server; every other key is one JSON file named
after its key id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import crypto
from common.fsutil import atomic_write
from common import ids

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger(__name__)

MASTER_FILE = "master.pem"
MASTER_META_FILE = "master.json"
KEY_SUFFIX = ".key.json"


@dataclass(frozen=True)
class KeyRecord:
    """One key: public half always, private half when we hold it."""

    key_id: str
    public: rsa.RSAPublicKey
    private: rsa.RSAPrivateKey | None = None
    label: str = ""
    active: bool = True
    creator: str = ""
    signature: str = ""
    created: float = field(default_factory=time.time)

    @property
    def alias(self) -> str:
        return self.key_id.split("$", 1)[0]

    @property
    def size(self) -> int:
        return self.public.key_size

    def public_ssh(self) -> str:
        return crypto.public_key_to_ssh(self.public)

    def private_pem(self) -> str | None:
        return crypto.private_key_to_pem(self.private).decode() if self.private is not None else None

    def info(self, include_private: bool = False, include_signature: bool = False) -> dict[str, Any]:
        """The reference engine's key description (`keys_list` items)."""
        data: dict[str, Any] = {
            "active": self.active,
            "alias": self.alias,
            "creator": self.creator,
            "include_private": include_private,
            "is_public": self.private is None,
            "key_id": self.key_id,
            "label": self.label or self.key_id,
            "private": self.private_pem() if include_private else None,
            "public": self.public_ssh(),
            "size": str(self.size),
        }
        if include_signature:
            data["signature"] = self.signature
        return data

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "public": self.public_ssh(),
            "private": self.private_pem(),
            "label": self.label,
            "active": self.active,
            "creator": self.creator,
            "signature": self.signature,
            "created": self.created,
        }

    @staticmethod
    def from_json(doc: dict[str, Any]) -> KeyRecord:
        private = crypto.load_private_key(doc["private"]) if doc.get("private") else None
        public = private.public_key() if private is not None else crypto.load_public_key(doc["public"])
        return KeyRecord(
            key_id=str(doc["key_id"]),
            public=public,
            private=private,
            label=str(doc.get("label") or ""),
            active=bool(doc.get("active", True)),
            creator=str(doc.get("creator") or ""),
            signature=str(doc.get("signature") or ""),
            created=float(doc.get("created") or time.time()),
        )


def fingerprint(public: rsa.RSAPublicKey) -> str:
    return crypto.key_fingerprint(public)


class Keyring:
    """Keys of one node, loaded from and written to one folder."""

    def __init__(self, root: Path):
        self.root = root
        self.master: rsa.RSAPrivateKey | None = None
        self.master_label = ""
        self._keys: dict[str, KeyRecord] = {}

    def load(self) -> None:
        """Read every key from disk; unreadable files are logged and skipped, never fatal."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.master = None
        master_path = self.root / MASTER_FILE
        if master_path.exists():
            self.master = crypto.load_private_key(master_path.read_bytes())
        try:
            self.master_label = str(json.loads((self.root / MASTER_META_FILE).read_text()).get("label") or "")
        except (FileNotFoundError, ValueError, AttributeError):
            self.master_label = ""
        self._keys = {}
        for path in sorted(self.root.glob("*" + KEY_SUFFIX)):
            try:
                record = KeyRecord.from_json(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError, crypto.CryptoError) as exc:
                log.warning("skipping unreadable key file %s: %s", path.name, exc)
                continue
            self._keys[record.key_id] = record

    # ---- master key ------------------------------------------------------------------------

    def set_master(self, key: rsa.RSAPrivateKey) -> None:
        atomic_write(self.root / MASTER_FILE, crypto.private_key_to_pem(key), mode=0o600)
        self.master = key

    def erase_master(self) -> None:
        for name in (MASTER_FILE, MASTER_META_FILE):
            (self.root / name).unlink(missing_ok=True)
        self.master = None
        self.master_label = ""

    def set_master_label(self, label: str) -> None:
        atomic_write(self.root / MASTER_META_FILE, json.dumps({"label": label}), mode=0o600)
        self.master_label = label

    def master_record(self, owner: ids.IdUrl) -> KeyRecord | None:
        """The master key as a record named after the identity that owns it."""
        if self.master is None:
            return None
        key_id = owner.key_id()
        return KeyRecord(key_id=key_id, public=self.master.public_key(), private=self.master,
                         label=self.master_label or key_id, creator=owner.url, created=0.0)

    # ---- other keys ------------------------------------------------------------------------

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def all(self) -> list[KeyRecord]:
        return list(self._keys.values())

    def put(self, record: KeyRecord) -> None:
        """Add or replace a key and persist it."""
        atomic_write(self._path(record.key_id), json.dumps(record.to_json()), mode=0o600)
        self._keys[record.key_id] = record

    def update(self, key_id: str, **changes: Any) -> KeyRecord:
        record = replace(self._keys[key_id], **changes)
        self.put(record)
        return record

    def remove(self, key_id: str) -> KeyRecord | None:
        record = self._keys.pop(key_id, None)
        self._path(key_id).unlink(missing_ok=True)
        return record

    def rename_owner(self, old_global_id: str, new_global_id: str, new_creator: str) -> list[tuple[str, str]]:
        """Move own keys to the identity's new global id (after a rotation); returns (old, new) ids."""
        moved = []
        for record in list(self._keys.values()):
            alias, _, owner = record.key_id.partition("$")
            if owner != old_global_id:
                continue
            new_id = f"{alias}${new_global_id}"
            if new_id in self._keys:
                continue
            self.put(replace(record, key_id=new_id, creator=new_creator))
            self.remove(record.key_id)
            moved.append((record.key_id, new_id))
        return moved

    def _path(self, key_id: str) -> Path:
        # Key ids also arrive from the network: encode them so a file name can never hold a
        # slash or dots that climb out of the folder, and hash the rare ones too long for a name.
        safe = base64.urlsafe_b64encode(key_id.encode()).decode().rstrip("=")
        if len(safe) > 200:
            safe = hashlib.sha256(key_id.encode()).hexdigest()
        return self.root / (safe + KEY_SUFFIX)
