"""The brokers' numbering of a group queue as a signed hash chain, and the member's checks of it.

Every queue entry carries a *link*, made and signed (master key) by the broker that numbered it:

    {"v": 1, "group": <group key id>, "seq": n, "message_id": …, "sender": <IDURL>,
     "digest": sha256 hex of the sealed message (envelope.Sealed.digest, its sender signature included),
     "prev": hash of the link at n-1 ("" at n = 0), "broker": <IDURL of the signer>,
     "signature": b64 RSA-PSS of LINK_DOMAIN + the canonical JSON of every field above}

and `hash` = sha256 hex of those signed bytes. A member keeps the hash of the last link it
consumed and takes the next entry only when its link is signed by one of the group's brokers
(the creator's signed DHT records), names exactly that entry, and chains from that hash. So a
broker can delay, but it cannot forge a member's message (the sender signature, envelope.py),
skip an entry (a gap: the next seq is not last + 1), reorder entries or show two members two
orders (a fork: the prev hash does not match, or two signed links for one seq) without the
member seeing it. The member then fetches from another broker and reports the faulty one.

Pure functions and dataclasses: signing and fetching keys happen at the edges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from common import codec

VERSION = 1
LINK_DOMAIN = b"bitdust-group-link:"
GENESIS = ""
"""The `prev` of the first link of a queue."""

# Stable reasons a member reports a broker under.
GAP = "gap"
FORK = "fork"
BAD_LINK = "bad_link"
FORGED_MESSAGE = "forged_message"


class ChainError(Exception):
    """An entry that does not continue the member's chain; `reason` is one of the codes above."""

    def __init__(self, reason: str, detail: str = "", culprits: tuple[str, ...] = ()):
        super().__init__(detail or reason)
        self.reason = reason
        self.culprits = culprits
        """The brokers proven at fault (empty: the broker that served the entry)."""


@dataclass(frozen=True)
class Link:
    """One broker-signed place in a group queue."""

    group: str
    seq: int
    message_id: str
    sender: str
    digest: str
    prev: str
    broker: str
    signature: str = ""

    def signed_bytes(self) -> bytes:
        """What the numbering broker signs: every field but the signature, in a fixed order."""
        return LINK_DOMAIN + codec.dumps({
            "v": VERSION, "group": self.group, "seq": self.seq, "message_id": self.message_id,
            "sender": self.sender, "digest": self.digest, "prev": self.prev, "broker": self.broker})

    def hash(self) -> str:
        """What the next link names as `prev`."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def wire(self) -> dict[str, Any]:
        return {"v": VERSION, "group": self.group, "seq": self.seq, "message_id": self.message_id,
                "sender": self.sender, "digest": self.digest, "prev": self.prev, "broker": self.broker,
                "signature": self.signature}

    @staticmethod
    def from_wire(doc: Any) -> "Link":
        """Strictly decode a link another node sent; raises `ChainError(BAD_LINK)`."""
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            raise ChainError(BAD_LINK, "no link of a known version")
        seq = doc.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ChainError(BAD_LINK, "link seq must be a non-negative integer")
        fields = []
        for name, limit in (("group", 256), ("message_id", 128), ("sender", 512), ("digest", 64), ("prev", 64),
                            ("broker", 512), ("signature", 4096)):
            value = doc.get(name)
            if not isinstance(value, str) or len(value) > limit or (not value and name != "prev"):
                raise ChainError(BAD_LINK, f"link {name} is missing or ill-formed")
            fields.append(value)
        group, message_id, sender, digest, prev, broker, signature = fields
        return Link(group, seq, message_id, sender, digest, prev, broker, signature)


def follows(link: Link, group: str, seq: int, message_id: str, sender: str, digest: str, last_seq: int,
            last_hash: str | None) -> None:
    """Raise `ChainError` unless `link` numbers exactly this entry right after the member's last one.

    `last_hash` is None when the member has consumed nothing it holds a link for (a member that
    starts at an empty queue, or one from before links): then any `prev` is taken at `last_seq + 1`.
    """
    if (link.group, link.seq, link.message_id, link.sender) != (group, seq, message_id, sender):
        raise ChainError(BAD_LINK, "the link names another entry")
    if link.digest != digest:
        raise ChainError(BAD_LINK, "the link names another message")
    if seq != last_seq + 1:
        raise ChainError(GAP, f"entry {seq} after {last_seq}: entries are missing")
    if last_hash is not None and link.prev != last_hash:
        raise ChainError(FORK, f"entry {seq} does not chain from the member's entry {last_seq}")
