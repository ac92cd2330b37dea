"""Identities of other nodes that were fetched and verified, in memory and on disk.

The cache pins the public key of an IDURL: a later document for the same IDURL signed by another
key is refused, so a compromised identity server cannot swap the key of a known node. An older
revision never replaces a newer one.

A document lists its sources, but anyone can write any IDURL there. A source counts for a
document only when it is *confirmed*: its own identity server served a document signed by the
same key (the IDURL that was fetched, or an earlier server's copy after a rotation: the rotation
notice), or this cache already holds the same key for it. A document is kept only when its primary
IDURL (its first source) is confirmed (else `UnconfirmedError`); its other unconfirmed sources are
ignored: not indexed, left out of the document the cache hands out (`get`, `put`, `all`), logged
and counted (`stats()["unconfirmed_sources"]`). So a stranger who lists Alice's IDURL among its
sources never becomes Alice here, and never makes Alice's own document a key conflict later.

At most `MAX_CACHED` documents are kept, the least recently fetched go first (peers can mint
identities), except those under a pinned IDURL: peers this node has contracts or friendships
with (`peer_pins` keeps the groups current). Pins are few (`MAX_PINNED`).

On disk: `<global id>.json` per document, `{"xml": the signed document, "sources": the confirmed
sources}`, written atomically, so what was confirmed survives a restart with the document; pins in
`pins.json` beside them. A file that fails verification is dropped; so are `*.xml` files of the
earlier layout, which lacked the confirmed sources (they are fetched again when needed).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from common.fsutil import atomic_write
from services.identity import document
from services.identity.document import DocumentError, IdentityDocument

log = logging.getLogger(__name__)


MAX_CACHED = 10_000
"""Other nodes' identities kept in memory and on disk."""
MAX_PINNED = 5_000
"""IDURLs kept out of eviction: contracts and friends are far fewer; the bound keeps the cache bounded."""
PINS_FILE = "pins.json"


class CacheConflictError(DocumentError):
    """A document that contradicts what the cache already knows about its IDURL."""


class UnconfirmedError(DocumentError):
    """A document whose primary IDURL does not serve the same key: it names someone it is not."""


class IdentityCache:
    """Verified identity documents by IDURL (every confirmed source of a document, plus followed IDURLs)."""

    def __init__(self, root: Path):
        self.root = root
        self._docs: dict[str, IdentityDocument] = {}
        self._confirmed: dict[str, tuple[str, ...]] = {}
        self._by_idurl: dict[str, str] = {}
        self._fetched: dict[str, float] = {}
        self._pins: dict[str, set[str]] = {}
        self.unconfirmed_sources = 0
        """Sources ignored since start because their own server did not confirm the key."""

    # ---- reading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the cached documents and the pins; a file that fails verification is dropped."""
        self.root.mkdir(parents=True, exist_ok=True)
        for legacy in self.root.glob("*.xml"):
            legacy.unlink(missing_ok=True)
        for path in sorted(self.root.glob("*@*.json")):
            try:
                entry = json.loads(path.read_bytes())
                doc = document.parse_verified(entry["xml"])
                listed = {str(s) for s in entry["sources"]}
                confirmed = tuple(s for s in doc.sources if s in listed)
                if path.name != f"{doc.global_id}.json" or doc.idurl not in confirmed:
                    raise DocumentError("the file does not match its document")
                self._index(doc, confirmed)
            except (OSError, ValueError, KeyError, TypeError) as exc:  # DocumentError is a ValueError
                log.warning("dropping cached identity %s: %s", path.name, exc)
                path.unlink(missing_ok=True)
        try:
            pins = json.loads((self.root / PINS_FILE).read_bytes())
            self._pins = {str(group): {str(p) for p in idurls} for group, idurls in pins.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("pinned identities unreadable, starting without: %s", exc)

    def get(self, idurl: str) -> IdentityDocument | None:
        """The document known for `idurl`, showing only its confirmed sources."""
        primary = self._by_idurl.get(idurl)
        return self._view(primary) if primary else None

    def age(self, idurl: str) -> float:
        """Seconds since the document for `idurl` was last fetched (infinite if never)."""
        primary = self._by_idurl.get(idurl)
        fetched = self._fetched.get(primary or "")
        return time.time() - fetched if fetched else float("inf")

    def all(self) -> list[IdentityDocument]:
        return [self._view(primary) for primary in self._docs]

    def stats(self) -> dict[str, Any]:
        return {"cached": len(self._docs), "max_cached": MAX_CACHED, "pinned": len(self._pinned_idurls()),
                "unconfirmed_sources": self.unconfirmed_sources}

    def unconfirmed(self, doc: IdentityDocument, served: Iterable[str]) -> list[str]:
        """Sources of `doc` that neither served it (`served`) nor are held here under its key:
        those the caller must ask their own servers about before `put`."""
        done = set(served)
        return [s for s in doc.sources if s not in done and not self._holds_key(s, doc.publickey)]

    # ---- writing ---------------------------------------------------------------------------

    def put(self, doc: IdentityDocument, requested: str | None = None,
            served: Iterable[str] = ()) -> IdentityDocument:
        """Remember a verified document; returns what the cache now holds for it.

        `requested` is the IDURL it was fetched from (its primary by default); `served` are other
        IDURLs whose own servers served a document with the same key. Both count as confirmed.

        Raises:
            UnconfirmedError: the primary IDURL is not confirmed.
            CacheConflictError: the key differs from the one held for a confirmed IDURL.
        """
        fetched = requested or doc.idurl
        vouched = {fetched, *served}
        confirmed = tuple(s for s in doc.sources if s in vouched or self._holds_key(s, doc.publickey))
        ignored = [s for s in doc.sources if s not in confirmed]
        if ignored:
            self.unconfirmed_sources += len(ignored)
            log.warning("identity fetched from %s lists sources whose servers do not confirm its key, ignored: %s",
                        fetched, ", ".join(ignored))
        if doc.idurl not in confirmed:
            raise UnconfirmedError(f"the identity fetched from {fetched} claims {doc.idurl}, which does not confirm it")
        names = {*confirmed, fetched}
        for idurl in names:
            known = self.get(idurl)
            if known is not None and known.publickey != doc.publickey:
                raise CacheConflictError(f"identity {idurl} is now signed by another key")
        known = self.get(fetched)
        if known is not None and known.revision > doc.revision:
            self._fetched[known.idurl] = time.time()
            return known
        for idurl in names:
            older = self.get(idurl)
            if older is not None and older.idurl != doc.idurl:
                self._forget(older.idurl)  # the node moved: its earlier IDURLs are sources of `doc`
        self._index(doc, confirmed)
        self._by_idurl[fetched] = doc.idurl
        atomic_write(self._path(doc), json.dumps({"xml": doc.to_xml(), "sources": list(confirmed)}))
        self._make_room(keep=doc.idurl)
        return self._view(doc.idurl)

    def remove(self, idurl: str) -> None:
        primary = self._by_idurl.get(idurl)
        if primary:
            self._forget(primary)

    # ---- pins ------------------------------------------------------------------------------

    def set_pins(self, group: str, idurls: Iterable[str]) -> bool:
        """Keep the documents of `idurls` out of eviction, as the whole of `group` (`suppliers`,
        `customers`, `friends`); True if the pins changed. Past `MAX_PINNED` pins in all, the
        rest of the group is left out and logged."""
        wanted = sorted(set(idurls))
        room = MAX_PINNED - sum(len(p) for g, p in self._pins.items() if g != group)
        if len(wanted) > room:
            log.warning("%d %s not pinned: at most %d identities are pinned", len(wanted) - room, group, MAX_PINNED)
            wanted = wanted[: max(0, room)]
        if set(wanted) == self._pins.get(group, set()):
            return False
        if wanted:
            self._pins[group] = set(wanted)
        else:
            self._pins.pop(group, None)
        atomic_write(self.root / PINS_FILE, json.dumps({g: sorted(p) for g, p in sorted(self._pins.items())}))
        return True

    def pinned(self, idurl: str) -> bool:
        return any(idurl in pins for pins in self._pins.values())

    def _pinned_idurls(self) -> set[str]:
        return set().union(*self._pins.values())

    # ---- internals -------------------------------------------------------------------------

    def _holds_key(self, idurl: str, publickey: str) -> bool:
        primary = self._by_idurl.get(idurl)
        held = self._docs.get(primary) if primary else None
        return held is not None and held.publickey == publickey

    def _view(self, primary: str) -> IdentityDocument:
        """The document as this node knows it: only its confirmed sources. When some were left out
        the copy carries no signature, so nobody can take it for the signed original."""
        doc = self._docs[primary]
        confirmed = self._confirmed[primary]
        return doc if confirmed == doc.sources else replace(doc, sources=confirmed, signature="")

    def _make_room(self, keep: str) -> None:
        """At most `MAX_CACHED` documents: the least recently fetched unpinned ones go."""
        excess = len(self._docs) - MAX_CACHED
        if excess <= 0:
            return
        protected = {keep} | {self._by_idurl[p] for p in self._pinned_idurls() if p in self._by_idurl}
        for _ in range(excess):
            # One out per document put, so a linear search beats sorting the whole cache each time.
            candidates = [p for p in self._docs if p not in protected]
            if not candidates:
                return  # everything left is pinned: MAX_PINNED bounds how far past MAX_CACHED that goes
            self._forget(min(candidates, key=lambda p: self._fetched.get(p, 0.0)))

    def _index(self, doc: IdentityDocument, confirmed: tuple[str, ...]) -> None:
        self._docs[doc.idurl] = doc
        self._confirmed[doc.idurl] = confirmed
        self._fetched[doc.idurl] = time.time()
        for source in confirmed:
            self._by_idurl[source] = doc.idurl

    def _forget(self, primary: str) -> None:
        doc = self._docs.pop(primary, None)
        self._confirmed.pop(primary, None)
        self._fetched.pop(primary, None)
        for idurl, target in list(self._by_idurl.items()):
            if target == primary:
                del self._by_idurl[idurl]
        if doc is not None:
            self._path(doc).unlink(missing_ok=True)

    def _path(self, doc: IdentityDocument) -> Path:
        return self.root / f"{doc.global_id}.json"
