"""Keeping the node in the network: join, rejoin, republish, announce on layers.

`DhtConnector` is the node's one long-lived state machine (it shows in `automats_list`):

    AT_STARTUP --listening--> LISTENING      (alone: the seed itself, or nobody answers yet)
    LISTENING  --joined-----> CONNECTED      (some peer is in the routing table)
    CONNECTED  --lost-------> LISTENING      (every contact went away: bootstrap again)
    *          --stopped----> STOPPED

`Maintainer.tick()` is one round of upkeep; the service runs it in a loop. When the routing
table is empty it bootstraps from the seeds and the contacts saved before a restart; when
connected it makes sure the seeds still know us (so a restarted seed finds the network again),
republishes our own values after every (re)join and periodically, and announces us on our layers.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from common.automat import Automat, AutomatRegistry
from services.dht import layers
from services.dht.directory import Directory
from services.dht.node import DhtNode

log = logging.getLogger(__name__)

REPUBLISH_INTERVAL = 600.0
SEED_CHECK_INTERVAL = 30.0
MAX_SAVED_CONTACTS = 40


class DhtConnector(Automat):
    """Whether this node is part of the DHT network."""

    initial = "AT_STARTUP"
    transitions = {
        ("AT_STARTUP", "listening"): "LISTENING",
        ("AT_STARTUP", "joined"): "CONNECTED",
        ("LISTENING", "joined"): "CONNECTED",
        ("CONNECTED", "lost"): "LISTENING",
        ("*", "stopped"): "STOPPED",
    }


EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]
SeedsProvider = Callable[[], Awaitable[list[tuple[str, int]]]]
IdurlProvider = Callable[[], Awaitable[str | None]]


class Maintainer:
    """One node's upkeep; every dependency comes in, so tests drive it tick by tick."""

    def __init__(self, node: DhtNode, directory: Directory, seeds: SeedsProvider, my_idurl: IdurlProvider,
                 wanted_layers: Callable[[], set[int]], emit: EventSink, registry: AutomatRegistry | None = None):
        self.node = node
        self.directory = directory
        self.seeds = seeds
        self.my_idurl = my_idurl
        self.wanted_layers = wanted_layers
        self.emit = emit
        self.machine = DhtConnector("dht_connector", registry)
        self.attached: set[int] = set()
        self._announced_at: dict[int, float] = {}
        self._republished_at = 0.0
        self._seeds_checked_at = 0.0
        self._needs_republish = True

    @property
    def connected(self) -> bool:
        return self.machine.state == "CONNECTED"

    async def tick(self) -> None:
        """One round of upkeep; never raises for network trouble."""
        if not self.node.contacts():
            if self.connected:
                self.machine.fire("lost")
            await self._join()
        else:
            await self._check_seeds()
        if self.node.contacts() and not self.connected:
            self.machine.fire("joined")
            self._needs_republish = True
            self._announced_at.clear()
            await self.emit("dht-layer-connected", {"layer_id": layers.DEFAULT, "dht_id": self.node.dht_id})
        elif not self.node.contacts() and self.machine.state == "AT_STARTUP":
            self.machine.fire("listening")
        now = time.monotonic()
        if self.connected and (self._needs_republish or now - self._republished_at > REPUBLISH_INTERVAL):
            self._needs_republish = False
            self._republished_at = now
            count = await self.node.republish(self.directory.renewed)
            log.info("republished %d own values", count)
        await self._announce(now)
        self._save_contacts()
        self.node.store.purge_expired()

    async def _join(self) -> None:
        saved = [tuple(c) for c in (self.node.store.meta_get("contacts") or []) if isinstance(c, list)]
        addrs = list(dict.fromkeys(await self.seeds() + [(str(h), int(p)) for h, p in saved]))
        addrs = [a for a in addrs if a != self.node.address]
        if not addrs:
            return
        found = await self.node.bootstrap(addrs)
        if found:
            log.info("joined the DHT through %d nodes", len(found))

    async def _check_seeds(self) -> None:
        # A seed that restarted has an empty routing table: pinging it puts us back in it.
        now = time.monotonic()
        if now - self._seeds_checked_at < SEED_CHECK_INTERVAL:
            return
        self._seeds_checked_at = now
        known = {(n.ip, n.port) for n in self.node.contacts()}
        missing = [a for a in await self.seeds() if a not in known and a != self.node.address]
        if missing:
            await self.node.bootstrap(missing)

    async def _announce(self, now: float) -> None:
        wanted = self.wanted_layers()
        self.attached &= wanted
        if not wanted:
            return
        idurl = await self.my_idurl()
        if not idurl:
            return
        for layer_id in sorted(wanted):
            if layer_id in self.attached and now - self._announced_at.get(layer_id, 0) < layers.ANNOUNCE_INTERVAL:
                continue
            if not self.connected and layer_id in self.attached:
                continue
            ok = await self.directory.announce(layer_id, idurl)
            self._announced_at[layer_id] = now
            if ok and layer_id not in self.attached:
                self.attached.add(layer_id)
                if layer_id != layers.DEFAULT and self.connected:
                    await self.emit("dht-layer-connected", {"layer_id": layer_id, "dht_id": self.node.dht_id})

    def _save_contacts(self) -> None:
        contacts = [[n.ip, n.port] for n in self.node.contacts()][:MAX_SAVED_CONTACTS]
        if contacts:
            self.node.store.meta_set("contacts", contacts)

    def force_announce(self) -> None:
        """Announce again at the next tick (the attached layers may have changed)."""
        self._announced_at.clear()
