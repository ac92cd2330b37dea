"""A bounded memory of recently seen packets, per sender, to refuse replays.

A replay is a byte-identical signed packet, so it is recognised by its signing digest. Entries
only need to outlive the accepted clock skew: anything older is refused as stale anyway.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class ReplayCache:
    """Signing digests seen per sender, bounded in senders and in entries per sender."""

    def __init__(self, window: float = 1200.0, per_sender: int = 4096, max_senders: int = 4096):
        self.window = window
        self.per_sender = per_sender
        self.max_senders = max_senders
        self._seen: OrderedDict[str, OrderedDict[bytes, float]] = OrderedDict()

    def admit(self, sender: str, digest: bytes, now: float | None = None) -> bool:
        """Remember `digest`; False when it was already seen from `sender` (a replay)."""
        current = time.monotonic() if now is None else now
        entries = self._seen.get(sender)
        if entries is None:
            entries = self._seen[sender] = OrderedDict()
            while len(self._seen) > self.max_senders:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(sender)
        while entries:
            oldest, seen_at = next(iter(entries.items()))
            if current - seen_at <= self.window and len(entries) < self.per_sender:
                break
            entries.pop(oldest)
        if digest in entries:
            return False
        entries[digest] = current
        return True
