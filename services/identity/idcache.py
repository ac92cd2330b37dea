"""Identities of other nodes that were fetched and verified, in memory and on disk.

The cache pins the public key of an IDURL: a later document for the same IDURL signed by another
key is refused, so a compromised identity server cannot swap the key of a known node. An older
revision never replaces a newer one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from common.fsutil import atomic_write
from services.identity import document
from services.identity.document import DocumentError, IdentityDocument

log = logging.getLogger(__name__)


MAX_CACHED = 10_000
"""Other nodes' identities kept in memory and on disk."""


class CacheConflictError(DocumentError):
    """A document that contradicts what the cache already knows about its IDURL."""


class IdentityCache:
    """Verified identity documents by IDURL (every source of a document, plus followed IDURLs)."""

    def __init__(self, root: Path):
        self.root = root
        self._docs: dict[str, IdentityDocument] = {}
        self._by_idurl: dict[str, str] = {}
        self._fetched: dict[str, float] = {}

    def load(self) -> None:
        """Read the cached documents; a file that fails verification is dropped."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.root.glob("*.xml")):
            try:
                self._index(document.parse_verified(path.read_bytes()))
            except (OSError, DocumentError) as exc:
                log.warning("dropping cached identity %s: %s", path.name, exc)
                path.unlink(missing_ok=True)

    def get(self, idurl: str) -> IdentityDocument | None:
        primary = self._by_idurl.get(idurl)
        return self._docs.get(primary) if primary else None

    def age(self, idurl: str) -> float:
        """Seconds since the document for `idurl` was last fetched (infinite if never)."""
        primary = self._by_idurl.get(idurl)
        fetched = self._fetched.get(primary or "")
        return time.time() - fetched if fetched else float("inf")

    def all(self) -> list[IdentityDocument]:
        return list(self._docs.values())

    def put(self, doc: IdentityDocument, requested: str | None = None) -> IdentityDocument:
        """Remember a verified document (fetched as `requested`); returns what the cache now holds.

        Raises `CacheConflictError` when the key differs from the one pinned for that IDURL.
        """
        for idurl in {*doc.sources, requested or doc.idurl}:
            known = self.get(idurl)
            if known is not None and known.publickey != doc.publickey:
                raise CacheConflictError(f"identity {idurl} is now signed by another key")
        known = self.get(requested or doc.idurl)
        if known is not None and known.revision > doc.revision:
            self._fetched[known.idurl] = time.time()
            return known
        for idurl in {*doc.sources, requested or doc.idurl}:
            older = self.get(idurl)
            if older is not None and older.idurl != doc.idurl:
                self._forget(older.idurl)  # the node moved: its earlier IDURLs are sources of `doc`
        self._index(doc)
        if requested:
            self._by_idurl[requested] = doc.idurl
        atomic_write(self._path(doc), doc.to_xml())
        self._make_room(keep=doc.idurl)
        return doc

    def _make_room(self, keep: str) -> None:
        """At most `MAX_CACHED` documents: the least recently fetched go (peers can mint identities)."""
        while len(self._docs) > MAX_CACHED:
            # One out per document put, so a linear search beats sorting the whole cache each time.
            self._forget(min((p for p in self._docs if p != keep), key=lambda p: self._fetched.get(p, 0.0)))

    def remove(self, idurl: str) -> None:
        primary = self._by_idurl.get(idurl)
        if primary:
            self._forget(primary)

    def _index(self, doc: IdentityDocument) -> None:
        self._docs[doc.idurl] = doc
        self._fetched[doc.idurl] = time.time()
        for source in doc.sources:
            self._by_idurl[source] = doc.idurl

    def _forget(self, primary: str) -> None:
        doc = self._docs.pop(primary, None)
        self._fetched.pop(primary, None)
        for idurl, target in list(self._by_idurl.items()):
            if target == primary:
                del self._by_idurl[idurl]
        if doc is not None:
            self._path(doc).unlink(missing_ok=True)

    def _path(self, doc: IdentityDocument) -> Path:
        return self.root / f"{doc.global_id}.xml"
