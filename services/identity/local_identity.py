"""This node's own identity document on disk (`<state>/identity/identity.xml`).

When another node takes the identity over (`identity_recover` there), the document is set aside:
`identity.xml` becomes `identity.replaced.xml` and the newer document is kept as
`identity.taken-over.xml`, the marker that says why this node has no identity any more.
"""

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

    @property
    def _replaced(self) -> Path:
        return self.path.with_name(self.path.stem + ".replaced.xml")

    @property
    def _marker(self) -> Path:
        return self.path.with_name(self.path.stem + ".taken-over.xml")

    def set_aside(self, newer: IdentityDocument) -> None:
        """Stop using the identity: keep the newer document as the marker, the old one beside it."""
        atomic_write(self._marker, newer.to_xml())
        if self.path.exists():
            self.path.replace(self._replaced)

    def taken_over(self) -> Path | None:
        return self._marker if self._marker.exists() else None

    def forget_takeover(self) -> None:
        self._marker.unlink(missing_ok=True)
