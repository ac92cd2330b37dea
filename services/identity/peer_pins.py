"""Whom the identity cache keeps out of eviction: the peers this node has contracts or friendships with.

The identity process asks, every `REFRESH_INTERVAL` seconds and soon after it starts, the storage
process for its suppliers and customers and the messaging process for its friends, and makes each
answer the whole of one pin group of the cache (`IdentityCache.set_pins`), which is persisted.

Pulled rather than pushed, on purpose: the pins are always exactly the current contracts and
friendships (a contract that ends unpins its peer at the next refresh, with no call to forget),
a process that was down when a contract started is caught up at the next refresh, and no other
process needs code for it. A process that does not answer leaves its group as it was. What it
costs is up to `REFRESH_INTERVAL` seconds during which a brand-new contract is not pinned yet: to
push it out, minted identities would have to outnumber the cache (10,000) within that time.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from common import ids, subjects
from common.errors import InvalidArgumentError, NodeError
from services.identity.idcache import IdentityCache

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 60.0
FIRST_REFRESH_DELAY = 10.0
"""Seconds after start: the other processes are usually up by then."""
ASK_TIMEOUT = 5.0

GROUPS: tuple[tuple[str, str], ...] = (
    ("suppliers", subjects.internal("storage", "suppliers_idurls")),
    ("customers", subjects.internal("storage", "customers_idurls")),
    ("friends", subjects.api("messaging", "friends_list")),
)
"""(pin group, the subject that lists its peers)."""


class Caller(Protocol):
    async def call(self, subject: str, kwargs: dict[str, Any] | None = None, timeout: float = ...) -> Any: ...


async def refresh(cache: IdentityCache, bus: Caller) -> dict[str, int]:
    """Ask for each group's peers and pin them; returns how many each group pins now (answered ones)."""
    counts: dict[str, int] = {}
    for group, subject in GROUPS:
        try:
            found = await bus.call(subject, {}, timeout=ASK_TIMEOUT)
        except NodeError as exc:
            log.debug("no %s to pin: %s", group, exc.reason)
            continue
        idurls = _idurls(found)
        if cache.set_pins(group, idurls):
            log.info("%d %s pinned in the identity cache", len(idurls), group)
        counts[group] = len(idurls)
    return counts


def _idurls(found: Any) -> list[str]:
    """The IDURLs of `{"idurls": [...]}` or of a list of `{"idurl": ...}`; malformed ones are skipped."""
    items = found.get("idurls") if isinstance(found, dict) else found
    if not isinstance(items, list):
        return []
    result = []
    for item in items:
        text = item.get("idurl") if isinstance(item, dict) else item
        try:
            result.append(ids.parse_idurl(str(text)).url)
        except InvalidArgumentError:
            continue
    return result
