"""Whether a share's files can be reached: the reference engine's share states, from a check.

A share's files live at its creator's suppliers. For each share looked at, a `ShareAccess` machine
finds them (DHT_LOOKUP: our own supplier positions for a share we created, else the creator's
signed suppliers record in the DHT), asks each one (SUPPLIERS?: a ping through the transport) and
is CONNECTED when enough of them answer to rebuild every block (`blocks.data_shares` of the
positions), DISCONNECTED when too few do or none is known, CLOSED once the share is closed.

A check starts when a share is created or opened, or the first time it is looked at (a share
granted by someone else is reached without being opened, as in the reference), and again when it
is looked at more than `RECHECK` seconds after the last one. While a re-check runs the machine
keeps its verdict, so a client polling for CONNECTED does not see it flicker.

    state           event                 next
    AT_STARTUP      connect               DHT_LOOKUP
    DISCONNECTED    connect               DHT_LOOKUP
    CLOSED          connect               DHT_LOOKUP
    DHT_LOOKUP      suppliers-found       SUPPLIERS?
    DHT_LOOKUP      suppliers-not-found   DISCONNECTED
    SUPPLIERS?      enough-answered       CONNECTED
    SUPPLIERS?      too-few-answered      DISCONNECTED
    CONNECTED       too-few-answered      DISCONNECTED   (a re-check)
    *               close                 CLOSED
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Protocol

from common.automat import Automat, AutomatRegistry
from common.errors import NodeError
from services.storage import blocks

log = logging.getLogger(__name__)

AT_STARTUP, DHT_LOOKUP, SUPPLIERS, CONNECTED, DISCONNECTED, CLOSED = (
    "AT_STARTUP", "DHT_LOOKUP", "SUPPLIERS?", "CONNECTED", "DISCONNECTED", "CLOSED")
RECHECK = 30.0
"""Seconds a verdict stands before looking at the share checks its suppliers again."""
PING_TIMEOUT = 10.0


class SharePeers(Protocol):
    """The node as the share check uses it (storage's BusPeers in production)."""

    async def suppliers_of(self, customer_idurl: str) -> list[str]:
        """The customer's suppliers by position from its signed DHT record ("" for an empty one)."""

    async def api(self, process: str, method: str, wait: float = 30, **kwargs: Any) -> Any: ...


class ShareAccess(Automat):
    """One share's reachability: its creator's suppliers found and asked."""

    initial = AT_STARTUP
    transitions = {
        (AT_STARTUP, "connect"): DHT_LOOKUP,
        (DISCONNECTED, "connect"): DHT_LOOKUP,
        (CLOSED, "connect"): DHT_LOOKUP,
        (DHT_LOOKUP, "suppliers-found"): SUPPLIERS,
        (DHT_LOOKUP, "suppliers-not-found"): DISCONNECTED,
        (SUPPLIERS, "enough-answered"): CONNECTED,
        (SUPPLIERS, "too-few-answered"): DISCONNECTED,
        (CONNECTED, "too-few-answered"): DISCONNECTED,
        ("*", "close"): CLOSED,
    }

    def __init__(self, key_id: str, registry: AutomatRegistry | None):
        super().__init__(f"shared_access_coordinator_{key_id.split('$', 1)[0]}", registry,
                         name="shared_access_coordinator")
        self.key_id = key_id
        self.suppliers: list[str] = []
        """The creator's suppliers by position, as last found (IDURLs, "" for an empty position)."""
        self.answered: set[str] = set()
        self.checked_at: float | None = None


class ShareAccessBook:
    """The `ShareAccess` machines of the shares looked at, and their checks (one at a time per share)."""

    def __init__(self, peers: SharePeers, own_suppliers: Callable[[], list[str]],
                 registry: AutomatRegistry | None, clock: Callable[[], float] = time.monotonic):
        self.peers = peers
        self.own_suppliers = own_suppliers
        self.registry = registry
        self.clock = clock
        self.machines: dict[str, ShareAccess] = {}
        self._checks: dict[str, asyncio.Task[None]] = {}

    def looked_at(self, key_id: str, creator: str, mine: bool) -> ShareAccess:
        """The share's machine; a check started when there was none yet or the verdict is stale."""
        machine = self.machines.get(key_id)
        if machine is None:
            machine = self.machines[key_id] = ShareAccess(key_id, self.registry)
        stale = machine.checked_at is None or self.clock() - machine.checked_at > RECHECK
        if machine.state != CLOSED and stale:
            self.check(key_id, creator, mine)
        return machine

    def check(self, key_id: str, creator: str, mine: bool) -> Awaitable[None]:
        """Start a check of the share's suppliers (or join the one running); the task is returned."""
        running = self._checks.get(key_id)
        if running is not None and not running.done():
            return running
        machine = self.machines.get(key_id)
        if machine is None:
            machine = self.machines[key_id] = ShareAccess(key_id, self.registry)
        task = asyncio.ensure_future(self._check(machine, creator, mine))
        self._checks[key_id] = task
        return task

    def close(self, key_id: str) -> None:
        task = self._checks.pop(key_id, None)
        if task is not None:
            task.cancel()
        machine = self.machines.get(key_id)
        if machine is not None:
            machine.fire("close")
            machine.checked_at = None

    def forget(self, key_id: str) -> None:
        self.close(key_id)
        machine = self.machines.pop(key_id, None)
        if machine is not None:
            machine.close()

    async def _check(self, machine: ShareAccess, creator: str, mine: bool) -> None:
        if machine.state != CONNECTED:
            machine.fire("connect")
        try:
            suppliers = self.own_suppliers() if mine else await self.peers.suppliers_of(creator)
        except NodeError as err:
            log.info("suppliers of share %s not read: %s", machine.key_id, err.reason)
            suppliers = []
        machine.suppliers = list(suppliers)[:blocks.MAX_SUPPLIERS]  # a record is the creator's word: bounded
        known = [s for s in dict.fromkeys(machine.suppliers) if s]
        if not known:
            machine.answered = set()
            machine.fire("suppliers-not-found" if machine.state == DHT_LOOKUP else "too-few-answered")
            machine.checked_at = self.clock()
            return
        machine.fire("suppliers-found")
        answers = await asyncio.gather(*(self._pings(idurl) for idurl in known))
        machine.answered = {idurl for idurl, ok in zip(known, answers, strict=True) if ok}
        enough = len(machine.answered) >= blocks.data_shares(len(machine.suppliers))
        machine.fire("enough-answered" if enough else "too-few-answered")
        machine.checked_at = self.clock()

    async def _pings(self, idurl: str) -> bool:
        try:
            reply = await self.peers.api("transport", "user_ping", wait=PING_TIMEOUT + 5, user_id=idurl,
                                         timeout=PING_TIMEOUT)
        except NodeError:
            return False
        return isinstance(reply, dict) and reply.get("command") == "Ack"
