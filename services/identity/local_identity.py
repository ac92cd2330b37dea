"""This node's own identity document on disk (`<state>/identity/identity.xml`)."""

from __future__ import annotations

import logging
from pathlib import Path

from common.fsutil import atomic_write
from services.identity import document
from services.identity.document import DocumentError, IdentityDocument

log = logging.getLogger(__name__)


class LocalIdentity:
    """Load, save and erase the node's signed identity document."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> IdentityDocument | None:
        """The stored document if it verifies; a corrupt one is reported and ignored, not deleted."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return document.parse_verified(raw)
        except DocumentError as exc:
            log.error("local identity %s is not valid: %s", self.path, exc)
            return None

    def save(self, doc: IdentityDocument) -> None:
        atomic_write(self.path, doc.to_xml())

    def erase(self) -> None:
        self.path.unlink(missing_ok=True)
