"""The customer's suppliers: hired through the DHT, watched, replaced, published.

Position `i` of the list stores fragment `i` of every block. Each hired supplier has a contract
machine:

    REQUEST --accepted--> CONNECTED --missed--> OFFLINE --accepted--> CONNECTED
    REQUEST --refused--> FIRED           OFFLINE --timeout (replace-after)--> FIRED

The employer ticks: it fills empty positions with random members of the suppliers layer (never
itself, never a node twice), re-asks every supplier now and then (`RequestService` doubles as the
heartbeat), replaces one that stayed OFFLINE too long, and publishes the signed suppliers record
whenever the list changes. The list survives restarts in `suppliers.json`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from common import codec
from common.automat import Automat, AutomatRegistry
from common.errors import InvalidArgumentError, NodeError
from common.fsutil import atomic_write
from services.storage.blocks import ecc_map_name
from common.ids import idurl_of

log = logging.getLogger(__name__)

REQUEST, CONNECTED, OFFLINE, FIRED = "REQUEST", "CONNECTED", "OFFLINE", "FIRED"
HEARTBEAT_INTERVAL = 10.0
REQUEST_TIMEOUT = 8.0


class Contract(Automat):
    """One supplier at one position."""

    initial = REQUEST
    transitions = {
        (REQUEST, "accepted"): CONNECTED,
        (REQUEST, "refused"): FIRED,
        (REQUEST, "missed"): OFFLINE,
        (CONNECTED, "missed"): OFFLINE,
        (CONNECTED, "refused"): FIRED,
        (OFFLINE, "accepted"): CONNECTED,
        (OFFLINE, "refused"): FIRED,
        (OFFLINE, "timeout"): FIRED,
        ("*", "fire"): FIRED,
    }


class Peers(Protocol):
    """What the employer needs from the other processes."""

    async def my_idurl(self) -> str | None: ...

    async def candidates(self, count: int) -> list[str]: ...

    async def request(self, idurl: str, command: str, payload: Any, timeout: float) -> dict[str, Any]: ...

    async def publish_suppliers(self, record: dict[str, Any]) -> None: ...


@dataclass
class Position:
    """Who stores fragment `index`, and how that contract goes."""

    index: int
    idurl: str = ""
    since: float = 0.0
    connected_at: float = 0.0
    last_ok: float = 0.0
    offline_since: float = 0.0
    machine: Contract | None = field(default=None, repr=False)

    @property
    def state(self) -> str:
        return self.machine.state if self.machine else ""


class Employer:
    """Hires, watches and replaces the suppliers of this customer."""

    def __init__(self, folder: Path, peers: Peers, automats: AutomatRegistry | None,
                 option: Callable[[str], Any],
                 on_replaced: Callable[[int, str, str], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.time,
                 on_connected: Callable[[int], None] | None = None):
        self.file = folder / "suppliers.json"
        folder.mkdir(parents=True, exist_ok=True)
        self.peers = peers
        self.automats = automats
        self.option = option
        self.on_replaced = on_replaced
        self.on_connected = on_connected
        """Told the position of a supplier that became CONNECTED (hired, or back from OFFLINE)."""
        self.clock = clock
        self.positions: list[Position] = []
        self.revision = 0
        self.published_revision = -1
        self.fired: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._load()

    # ---- persistence --------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            doc = codec.loads(self.file.read_bytes())
        except (OSError, ValueError):
            return
        self.revision = int(doc.get("revision") or 0)
        for i, entry in enumerate(doc.get("suppliers") or []):
            pos = Position(i, str(entry.get("idurl") or ""), float(entry.get("since") or 0))
            if pos.idurl:
                pos.machine = self._machine(pos)
            self.positions.append(pos)

    def _save(self) -> None:
        doc = {"revision": self.revision, "ecc_map": self.ecc_map,
               "suppliers": [{"idurl": p.idurl, "since": p.since} for p in self.positions]}
        atomic_write(self.file, codec.dumps(doc), mode=0o600)

    def _machine(self, pos: Position) -> Contract:
        return Contract(f"supplier_contract_{pos.index}_{int(self.clock() * 1000) % 10**8}", self.automats,
                        name="supplier_connector")

    # ---- views ----------------------------------------------------------------------------------

    @property
    def desired(self) -> int:
        return int(self.option("services/customer/suppliers-number"))

    @property
    def ecc_map(self) -> str:
        return ecc_map_name(max(1, len(self.positions) or self.desired))

    def idurls(self) -> list[str]:
        return [p.idurl for p in self.positions]

    def connected(self) -> list[Position]:
        return [p for p in self.positions if p.idurl and p.state == CONNECTED]

    def position_of(self, idurl: str) -> int | None:
        return next((p.index for p in self.positions if p.idurl == idurl), None)

    def needed_per_supplier(self) -> int:
        needed = int(self.option("services/customer/needed-space"))
        return max(1, needed // max(1, self.desired))

    # ---- work -----------------------------------------------------------------------------------

    async def tick(self) -> None:
        """One round: resize, hire, heartbeat, replace, publish."""
        async with self._lock:
            me = await self.peers.my_idurl()
            if not me:
                return
            self._resize()
            now = self.clock()
            checks = [self._check(p) for p in self.positions
                      if p.idurl and now - p.last_ok >= HEARTBEAT_INTERVAL and p.state != FIRED]
            if checks:
                await asyncio.gather(*checks)
            replace_after = float(self.option("services/employer/replace-offline-after"))
            for pos in self.positions:
                if pos.idurl and pos.state == OFFLINE and now - pos.offline_since >= replace_after:
                    log.info("supplier %s at position %d offline for %.0fs: replacing", pos.idurl, pos.index,
                             now - pos.offline_since)
                    assert pos.machine is not None
                    pos.machine.fire("timeout")
            await self._hire(me)
            await self._publish(me)

    def _resize(self) -> None:
        desired = self.desired
        if len(self.positions) < desired:
            self.positions.extend(Position(i) for i in range(len(self.positions), desired))
            self._bump()
        elif len(self.positions) > desired:
            for pos in self.positions[desired:]:
                if pos.idurl:
                    asyncio.ensure_future(self._cancel(pos.idurl))
                if pos.machine:
                    pos.machine.close()
            del self.positions[desired:]
            self._bump()

    def _bump(self) -> None:
        self.revision += 1
        self._save()
        self.changed.set()

    def _service_request(self, pos: Position) -> dict[str, Any]:
        return {"service": "supplier", "needed_bytes": self.needed_per_supplier(), "ecc_map": self.ecc_map,
                "position": pos.index}

    async def _ask(self, idurl: str, pos: Position) -> tuple[bool, str]:
        """Send RequestService; (accepted, reason)."""
        try:
            reply = await self.peers.request(idurl, "RequestService", self._service_request(pos), REQUEST_TIMEOUT)
        except NodeError as err:
            return False, err.reason or "unreachable"
        if reply.get("command") == "Ack":
            return True, ""
        payload = reply.get("payload")
        reason = payload.get("reason") if isinstance(payload, dict) else str(payload)
        return False, f"refused:{reason}"

    async def _check(self, pos: Position) -> None:
        accepted, reason = await self._ask(pos.idurl, pos)
        self.note(pos.idurl, accepted, reason)

    def note(self, idurl: str, accepted: bool, reason: str = "") -> None:
        """Record the outcome of a call to a supplier (heartbeat or data transfer)."""
        for pos in self.positions:
            if pos.idurl != idurl or pos.machine is None:
                continue
            now = self.clock()
            if accepted:
                came_back = pos.state != CONNECTED
                if came_back:
                    pos.connected_at = now
                pos.last_ok = now
                pos.offline_since = 0.0
                pos.machine.fire("accepted")
                if came_back and pos.state == CONNECTED and self.on_connected is not None:
                    self.on_connected(pos.index)
            elif reason.startswith("refused:"):
                pos.machine.fire("refused")
            else:
                if pos.state != OFFLINE:
                    pos.offline_since = now
                pos.machine.fire("missed")

    def mark_offline(self, idurl: str) -> None:
        """The transport lost the link to `idurl`."""
        self.note(idurl, False, "connection_lost")

    async def _hire(self, me: str) -> None:
        vacant = [p for p in self.positions if not p.idurl or p.state == FIRED]
        if not vacant:
            return
        now = self.clock()
        self.fired = {i: t for i, t in self.fired.items() if now - t < 600}
        taken = {p.idurl for p in self.positions if p.idurl and p.state != FIRED}
        candidates: list[str] = []
        try:
            candidates = await self.peers.candidates(len(self.positions) * 2 + 4)
        except NodeError as err:
            log.info("no supplier candidates from the DHT: %s", err.reason)
        pool = [c for c in dict.fromkeys(self.preferred() + candidates)
                if c != me and c not in taken and c not in self.fired]
        for pos in vacant:
            while pool:
                idurl = pool.pop(0)
                if await self.hire(pos, idurl):
                    break

    def preferred(self) -> list[str]:
        """`services/employer/candidates`: IDURLs or global ids asked first when a position is vacant."""
        found = []
        for item in str(self.option("services/employer/candidates") or "").split(","):
            try:
                found.append(idurl_of(item.strip()))
            except InvalidArgumentError:
                if item.strip():
                    log.warning("ignoring malformed supplier candidate %r", item.strip())
        return found

    async def hire(self, pos: Position, idurl: str) -> bool:
        """Ask `idurl` to serve position `pos`; on acceptance it replaces whoever was there."""
        accepted, reason = await self._ask(idurl, pos)
        if not accepted:
            log.info("supplier candidate %s refused or unreachable: %s", idurl, reason)
            self.fired[idurl] = self.clock()
            return False
        old = pos.idurl
        if pos.machine is not None:
            pos.machine.close()
        if old and old != idurl:
            self.fired[old] = self.clock()
            asyncio.ensure_future(self._cancel(old))
        pos.idurl, pos.since = idurl, self.clock()
        pos.machine = self._machine(pos)
        self.note(idurl, True)
        self._bump()
        log.info("hired %s at position %d", idurl, pos.index)
        if old and old != idurl and self.on_replaced is not None:
            await self.on_replaced(pos.index, old, idurl)
        return True

    def republish(self) -> None:
        """Publish the suppliers record again at the next tick (under our IDURL of now)."""
        self._bump()
        self.published_revision = -1

    def adopt(self, suppliers: list[str], revision: int) -> None:
        """Take over the positions a suppliers record lists (a recovered identity's suppliers).

        They are checked by the next heartbeat like positions loaded from disk; one that stays away
        is replaced, and its fragments rebuilt, as usual.
        """
        self.close()
        now = self.clock()
        self.positions = []
        for index, idurl in enumerate(suppliers):
            pos = Position(index, idurl, now if idurl else 0.0)
            if idurl:
                pos.machine = self._machine(pos)
            self.positions.append(pos)
        self.revision = max(self.revision, revision) + 1
        self.published_revision = -1
        self._save()

    async def change(self, index: int, new_idurl: str | None) -> Position:
        """`supplier_change`: put `new_idurl` (or a random member) at position `index`."""
        async with self._lock:
            me = await self.peers.my_idurl() or ""
            pos = self.positions[index]
            taken = {p.idurl for p in self.positions if p.idurl}
            if new_idurl:
                if new_idurl == me or new_idurl in taken:
                    raise NodeError(f"{new_idurl} is this node or already a supplier", reason="supplier_taken",
                                    status=409)
                if not await self.hire(pos, new_idurl):
                    raise NodeError(f"{new_idurl} did not accept the request", reason="supplier_refused",
                                    status=409)
            else:
                candidates = await self.peers.candidates(len(self.positions) * 2 + 4)
                pool = [c for c in dict.fromkeys(candidates) if c != me and c not in taken]
                for idurl in pool:
                    if await self.hire(pos, idurl):
                        break
                else:
                    raise NodeError("no other supplier accepted", reason="no_suppliers", status=409)
            await self._publish(me)
            return pos

    async def _cancel(self, idurl: str) -> None:
        try:
            await self.peers.request(idurl, "CancelService", {}, REQUEST_TIMEOUT)
        except NodeError as err:
            log.info("CancelService to %s failed: %s", idurl, err.reason)

    async def _publish(self, me: str) -> None:
        if self.published_revision == self.revision or not all(self.idurls()):
            return  # published once every position has a supplier, as readers expect
        record = {"customer_idurl": me, "publisher_idurl": me, "ecc_map": self.ecc_map,
                  "suppliers": self.idurls(), "revision": self.revision}
        try:
            await self.peers.publish_suppliers(record)
            self.published_revision = self.revision
        except NodeError as err:
            log.info("suppliers record not published yet: %s", err.reason)

    async def ping_all(self) -> None:
        async with self._lock:
            await asyncio.gather(*(self._check(p) for p in self.positions if p.idurl))

    def close(self) -> None:
        for pos in self.positions:
            if pos.machine:
                pos.machine.close()
