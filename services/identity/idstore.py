"""What an identity server keeps and the rules for accepting an uploaded identity.

An upload is accepted when it is a well-formed document validly signed by its own key that
lists this server among its sources (or updates a name this server already holds with the same
key, which is how a node that moved to another server tells the old one where it went). A name
belongs to the first key that registered it; revisions only go up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from common.fsutil import atomic_write
from common import ids
from services.identity import document
from services.identity.document import DocumentError, IdentityDocument

log = logging.getLogger(__name__)


class UploadRefusedError(Exception):
    """An upload the server refuses: `status` and `reason` are sent back to the uploader."""

    def __init__(self, message: str, status: int, reason: str):
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class UploadResult:
    """An accepted upload: the name it is stored under and whether anything changed."""

    name: str
    revision: int
    changed: bool


class IdServerStore:
    """Identity documents served by this node's identity server, one file per name."""

    def __init__(self, root: Path, hosts: set[str]):
        """`hosts` are the `host:port` under which clients reach this server."""
        self.root = root
        self.hosts = hosts
        root.mkdir(parents=True, exist_ok=True)

    def read(self, name: str) -> bytes | None:
        """The stored XML of `name`, or None."""
        if not ids.USERNAME_RE.match(name):
            return None
        try:
            return (self.root / f"{name}.xml").read_bytes()
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.xml") if ids.USERNAME_RE.match(p.stem))

    def accept(self, raw: bytes) -> UploadResult:
        """Verify and store an uploaded document; raises `UploadRefusedError`."""
        try:
            doc = document.parse_verified(raw)
        except DocumentError as exc:
            reason = "invalid_signature" if "signature" in str(exc) else "invalid_document"
            raise UploadRefusedError(str(exc), 400, reason) from None
        name = doc.name
        current_raw = self.read(name)
        current = self._parse_stored(name, current_raw)
        if not self._lists_me(doc) and current is None:
            raise UploadRefusedError(f"this identity server is not among the sources of {name}", 400, "wrong_server")
        if current is not None:
            if current.publickey != doc.publickey:
                raise UploadRefusedError(f"name {name} is taken by another key", 409, "name_taken")
            if doc.revision < current.revision or (doc.revision == current.revision and doc != current):
                raise UploadRefusedError(
                    f"revision {doc.revision} is not newer than the stored revision {current.revision}",
                    409, "stale_revision",
                )
            if doc == current:
                return UploadResult(name, doc.revision, changed=False)
        atomic_write(self.root / f"{name}.xml", doc.to_xml())
        log.info("identity %s stored, revision %d", name, doc.revision)
        return UploadResult(name, doc.revision, changed=True)

    def _lists_me(self, doc: IdentityDocument) -> bool:
        return any(ids.parse_idurl(source).server in self.hosts for source in doc.sources)

    def _parse_stored(self, name: str, raw: bytes | None) -> IdentityDocument | None:
        if raw is None:
            return None
        try:
            return document.parse_verified(raw)
        except DocumentError as exc:
            # A corrupt file must not lock the name forever, nor let anyone take it silently.
            log.error("stored identity %s is unreadable: %s", name, exc)
            raise UploadRefusedError(f"stored identity {name} is unreadable", 500, "internal_error") from None
