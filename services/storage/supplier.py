"""The supplier role: lend disk to customers and keep their fragments.

Each request reaches the supplier as an inbox document from the transport, which has already
verified the packet's signature and sender: `creator_idurl` is who really sent it, and for its own
requests it is the customer. Each gets one reply document:

    RequestService {"service": "supplier", needed_bytes, ecc_map, position}   Ack {accepted, allocated, used}
    RequestService {"service": "supplier_access", grantee_idurl, prefix, revoke}  Ack {grantee_idurl, prefix, granted}
    CancelService  (any payload)                                  Ack {cancelled, deleted}
    Data           binary, packet_id "<name>:<nonce>"             Ack {name, size, sha256}, once durable
    Retrieve       {name, customer_idurl?}                        Data {payload_path}
    ListFiles      {prefix?, customer_idurl?, after?}             Ack {files: [{name, size, sha256}], truncated}
    DeleteFile     {names: [...]}                                 Ack {deleted}
    DeleteBackup   {prefix}                                       Ack {deleted}

A refusal is `Fail {reason, error}` with a stable reason code: `invalid_request`, `unknown_command`,
`over_donated_space`, `not_a_customer`, `over_quota`, `bad_name`, `bad_payload`, `not_found`,
`forbidden`, `internal_error`. Handlers raise `NodeError`s; `on_inbox` is the edge that turns them
into Fail documents, so nothing escapes it.

Trust boundaries: a customer reads, lists and deletes only its own objects, plus what another
customer granted it to read (by name prefix); names are checked against one pattern before they
touch a path; sizes, counts and lists are bounded. On a refused Data packet the spool file stays
where it is: the spool belongs to the transport, which removes what it spooled.

Requests of one customer that change its state run one at a time (a lock per customer), so a
quota check and the write it allows cannot interleave with another write of the same customer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar

from common.automat import Automat, AutomatRegistry
from common.errors import InvalidArgumentError, NodeError, NotFoundError
from services.storage import blocks
from services.storage.fragment_store import Contract, FragmentStore, is_valid_name

log = logging.getLogger(__name__)

MAX_NEEDED_BYTES = 1 << 50
"""The largest allocation a customer may ask for (1 PiB): anything above is a malformed request."""
MAX_OBJECT_BYTES = 256 << 20
"""The largest single object: a fragment of a 4 MiB block is far smaller."""
MAX_OBJECTS_PER_CUSTOMER = 1_000_000
MAX_NAMES_PER_DELETE = 10_000
MAX_LISTED = 10_000
"""Files answered by one ListFiles; a longer listing says `truncated` and continues with `after`."""
MAX_GRANTS_PER_CUSTOMER = 1_000
MAX_IDURL_CHARS = 1_024

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class RefusedError(NodeError):
    """A well-formed request the supplier will not serve; `reason` says why."""

    status = 403
    reason = "forbidden"


# --- the contract machine ----------------------------------------------------------------------

SERVING = "SERVING"
ERASING = "ERASING"
CLOSED = "CLOSED"


class CustomerContract(Automat):
    """One customer's contract as its supplier lives it.

        AT_STARTUP --service-accepted / contract-restored--> SERVING --service-updated--> SERVING
        SERVING --service-cancelled / customer-rejected--> ERASING --data-erased--> CLOSED
    """

    transitions: ClassVar[dict[tuple[str, str], str]] = {
        ("AT_STARTUP", "service-accepted"): SERVING,
        ("AT_STARTUP", "contract-restored"): SERVING,
        (SERVING, "service-updated"): SERVING,
        (SERVING, "service-cancelled"): ERASING,
        (SERVING, "customer-rejected"): ERASING,
        (ERASING, "data-erased"): CLOSED,
    }


# --- the role ----------------------------------------------------------------------------------

@dataclass
class _CustomerLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class SupplierRole:
    """Serves customers' storage requests from one state folder.

    `donated_bytes` is read at every allocation, so a change of the donated space applies to the
    next request. Construction reconciles disk and index (blocking: run it off the event loop
    when the store is large). Callers drain their in-flight requests before `close()`.
    """

    def __init__(self, root: Path, donated_bytes: Callable[[], int], clock: Callable[[], float] = time.time,
                 automats: AutomatRegistry | None = None,
                 earlier_idurls: Callable[[str], Awaitable[list[str]]] | None = None,
                 admit: Callable[[str], Awaitable[None]] | None = None):
        self._earlier_idurls = earlier_idurls
        self._admit = admit
        """Raises when a customer may not hire this supplier (`contract_rules.ContractRules.admit`)."""
        """The IDURLs a customer's identity lists besides its own (where it was before a rotation)."""
        self._store = FragmentStore(root)
        self._store.reconcile()
        self._donated_bytes = donated_bytes
        self._clock = clock
        self._automats = automats
        self._refused: Counter[str] = Counter()
        self._locks: dict[str, _CustomerLock] = {}
        self._allocation = asyncio.Lock()
        self._machines: dict[str, CustomerContract] = {}
        for contract in self._store.contracts():
            self._machine(contract.idurl).fire("contract-restored")
        self._handlers: dict[str, Handler] = {
            "RequestService": self._request_service,
            "CancelService": self._cancel_service,
            "Data": self._data,
            "Retrieve": self._retrieve,
            "ListFiles": self._list_files,
            "DeleteFile": self._delete_file,
            "DeleteBackup": self._delete_backup,
        }

    def close(self) -> None:
        for machine in self._machines.values():
            machine.close()
        self._machines.clear()
        self._store.close()

    # --- the packet edge ---------------------------------------------------------------------

    async def _follow_rotation(self, creator: str) -> None:
        """A customer that rotated its identity keeps its contract and data under its new IDURL.

        Only a sender with no contract is looked up, and only its own verified identity (which the
        transport already fetched) can name an earlier IDURL: nobody can claim another's data.
        """
        if self._earlier_idurls is None or self._store.contract(creator) is not None:
            return
        try:
            earlier = await self._earlier_idurls(creator)
        except NodeError:
            return
        for old in earlier:
            if old != creator and self._store.contract(old) is not None:
                async with self._allocation:
                    renamed = await asyncio.to_thread(self._store.rename_customer, old, creator)
                if renamed:
                    machine = self._machines.pop(old, None)
                    if machine is not None:
                        machine.close()
                    self._machine(creator).fire("contract-restored")
                    log.info("customer %s moved to %s: contract and data follow", old, creator)
                return

    async def on_inbox(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Answer one inbox document with an Ack, Data or Fail document; never raises."""
        try:
            if not isinstance(doc, dict):
                raise InvalidArgumentError("inbox document is not an object", reason="invalid_request")
            handler = self._handlers.get(str(doc.get("command")))
            if handler is None:
                raise InvalidArgumentError(f"unknown command {doc.get('command')!r:.40}", reason="unknown_command")
            creator = _idurl(doc.get("creator_idurl"), "creator_idurl")
            await self._follow_rotation(creator)
            return await handler(creator, doc)
        except NodeError as exc:
            self._refused[exc.reason] += 1
            return {"command": "Fail", "payload": {"reason": exc.reason, "error": exc.message}}
        except Exception:
            log.exception("supplier failed on %s", doc.get("command") if isinstance(doc, dict) else type(doc))
            self._refused["internal_error"] += 1
            return {"command": "Fail", "payload": {"reason": "internal_error", "error": "internal error"}}

    def stats(self) -> dict[str, int]:
        """Refusals since start, by reason."""
        return dict(self._refused)

    # --- contracts ---------------------------------------------------------------------------

    async def _request_service(self, creator: str, doc: dict[str, Any]) -> dict[str, Any]:
        payload = _payload(doc)
        service = payload.get("service")
        if service == "supplier":
            return await self._hire(creator, payload)
        if service == "supplier_access":
            return await self._access(creator, payload)
        raise InvalidArgumentError(f"unknown service {service!r:.40}", reason="invalid_request")

    async def _hire(self, creator: str, payload: dict[str, Any]) -> dict[str, Any]:
        needed = _int(payload.get("needed_bytes"), "needed_bytes", 1, MAX_NEEDED_BYTES)
        ecc_map, position = _ecc_and_position(payload)
        if self._admit is not None:
            await self._admit(creator)
        async with self._customer_lock(creator), self._allocation:
            current = self._store.contract(creator)
            used = self._store.used_bytes(creator)
            allocated = max(needed, used)
            others = sum(c.allocated for c in self._store.contracts() if c.idurl != creator)
            donated = self._donated_bytes()
            if others + allocated > donated:
                raise RefusedError(f"{allocated} bytes do not fit: {donated - others} left of {donated} donated",
                                   reason="over_donated_space")
            since = current.since if current is not None else self._clock()
            await asyncio.to_thread(self._store.save_contract, Contract(creator, allocated, since, ecc_map, position))
            self._machine(creator).fire("service-updated" if current is not None else "service-accepted")
        log.info("customer %s %s with %d bytes", creator, "updated" if current else "accepted", allocated)
        return _ack({"accepted": True, "allocated": allocated, "used": used})

    async def _access(self, creator: str, payload: dict[str, Any]) -> dict[str, Any]:
        grantee = _idurl(payload.get("grantee_idurl"), "grantee_idurl")
        prefix = _prefix(payload.get("prefix"), allow_empty=True)
        revoke = payload.get("revoke", False)
        if not isinstance(revoke, bool):
            raise InvalidArgumentError("revoke must be a boolean", reason="invalid_request")
        async with self._customer_lock(creator):
            self._require_customer(creator)
            if revoke:
                await asyncio.to_thread(self._store.revoke, creator, grantee, prefix)
            else:
                if self._store.grant_count(creator) >= MAX_GRANTS_PER_CUSTOMER:
                    raise RefusedError(f"at most {MAX_GRANTS_PER_CUSTOMER} grants", reason="over_quota")
                await asyncio.to_thread(self._store.grant, creator, grantee, prefix)
        return _ack({"grantee_idurl": grantee, "prefix": prefix, "granted": not revoke})

    async def _cancel_service(self, creator: str, doc: dict[str, Any]) -> dict[str, Any]:
        async with self._customer_lock(creator):
            if self._store.contract(creator) is None:
                return _ack({"cancelled": False, "deleted": 0})
            deleted, _ = await self._erase(creator, "service-cancelled")
        return _ack({"cancelled": True, "deleted": deleted})

    async def reject(self, customer_idurl: str) -> dict[str, Any]:
        """Drop a customer's contract and erase all its data.

        Raises:
            NotFoundError: reason `customer_not_found` when `customer_idurl` has no contract.
        """
        async with self._customer_lock(customer_idurl):
            if self._store.contract(customer_idurl) is None:
                raise NotFoundError(f"{customer_idurl} is not a customer", reason="customer_not_found")
            deleted, freed = await self._erase(customer_idurl, "customer-rejected")
        return {"idurl": customer_idurl, "rejected": True, "deleted": deleted, "freed": freed}

    async def _erase(self, customer: str, event: str) -> tuple[int, int]:
        machine = self._machine(customer)
        machine.fire(event)
        deleted, freed = await asyncio.to_thread(self._store.erase_customer, customer)
        machine.fire("data-erased")
        machine.close()
        self._machines.pop(customer, None)
        log.info("customer %s gone (%s): %d objects, %d bytes erased", customer, event, deleted, freed)
        return deleted, freed

    # --- objects -----------------------------------------------------------------------------

    async def _data(self, creator: str, doc: dict[str, Any]) -> dict[str, Any]:
        name = _object_name(doc.get("packet_id"))
        if doc.get("binary") is not True:
            raise InvalidArgumentError("Data must carry a binary payload", reason="invalid_request")
        spool = doc.get("payload_path")
        if not isinstance(spool, str) or not spool:
            raise InvalidArgumentError("payload_path is missing", reason="invalid_request")
        size = _int(doc.get("payload_size"), "payload_size", 0, None)
        sha256 = doc.get("payload_sha256")
        if not isinstance(sha256, str) or _SHA256_RE.fullmatch(sha256) is None:
            raise InvalidArgumentError("payload_sha256 is not a sha256 hex digest", reason="invalid_request")
        if size > MAX_OBJECT_BYTES:
            raise RefusedError(f"objects are at most {MAX_OBJECT_BYTES} bytes", reason="over_quota")
        async with self._customer_lock(creator):
            contract = self._require_customer(creator)
            existing = self._store.get(creator, name)
            if existing is None and self._store.object_count(creator) >= MAX_OBJECTS_PER_CUSTOMER:
                raise RefusedError(f"at most {MAX_OBJECTS_PER_CUSTOMER} objects", reason="over_quota")
            used_after = self._store.used_bytes(creator) - (existing.size if existing else 0) + size
            if used_after > contract.allocated:
                raise RefusedError(f"{used_after} bytes would exceed the {contract.allocated} allocated",
                                   reason="over_quota")
            stored = await asyncio.to_thread(self._store.store, creator, name, spool, size, sha256)
        return _ack(stored.to_dict())

    async def _retrieve(self, creator: str, doc: dict[str, Any]) -> dict[str, Any]:
        payload = _payload(doc)
        name = payload.get("name")
        if not is_valid_name(name):
            raise InvalidArgumentError(f"invalid object name {name!r:.80}", reason="bad_name")
        customer, prefixes = self._read_access(creator, payload)
        if prefixes is not None and not any(name.startswith(p) for p in prefixes):
            raise RefusedError("no read grant covers this name", reason="forbidden")
        if self._store.get(customer, name) is None:
            raise NotFoundError(f"no object {name}", reason="not_found")
        return {"command": "Data", "payload_path": str(self._store.path_of(customer, name))}

    async def _list_files(self, creator: str, doc: dict[str, Any]) -> dict[str, Any]:
        payload = _payload(doc)
        prefix = _prefix(payload.get("prefix", ""), allow_empty=True)
        after = payload.get("after", "")
        if not isinstance(after, str) or len(after) > 200:
            raise InvalidArgumentError("after must be a name", reason="invalid_request")
        customer, granted = self._read_access(creator, payload)
        # Each grant narrows the asked prefix to the longer of the two, when one extends the other.
        ranges = [prefix] if granted is None else sorted({
            max(prefix, g, key=len) for g in granted if g.startswith(prefix) or prefix.startswith(g)})
        found = {o.name: o for r in ranges for o in self._store.objects(customer, r, after, MAX_LISTED + 1)}
        files = [found[n].to_dict() for n in sorted(found)[:MAX_LISTED]]
        return _ack({"files": files, "truncated": len(found) > MAX_LISTED})

    async def _delete_file(self, creator: str, doc: dict[str, Any]) -> dict[str, Any]:
        names = _payload(doc).get("names")
        if not isinstance(names, list) or len(names) > MAX_NAMES_PER_DELETE:
            raise InvalidArgumentError(f"names must be a list of at most {MAX_NAMES_PER_DELETE}",
                                       reason="invalid_request")
        for name in names:
            if not is_valid_name(name):
                raise InvalidArgumentError(f"invalid object name {name!r:.80}", reason="bad_name")
        async with self._customer_lock(creator):
            self._require_customer(creator)
            deleted = await asyncio.to_thread(self._store.delete, creator, names)
        return _ack({"deleted": deleted})

    async def _delete_backup(self, creator: str, doc: dict[str, Any]) -> dict[str, Any]:
        prefix = _prefix(_payload(doc).get("prefix"), allow_empty=False)
        async with self._customer_lock(creator):
            self._require_customer(creator)
            deleted = await asyncio.to_thread(self._store.delete_prefix, creator, prefix)
        return _ack({"deleted": deleted})

    def _read_access(self, creator: str, payload: dict[str, Any]) -> tuple[str, list[str] | None]:
        """(customer, granted prefixes) for a read; None prefixes means the customer itself.

        A stranger learns nothing, not even whether the customer exists: without a grant it is
        `forbidden` either way (grants are erased with the contract).
        """
        customer = payload.get("customer_idurl")
        if customer is None or customer == creator:
            self._require_customer(creator)
            return creator, None
        customer = _idurl(customer, "customer_idurl")
        granted = self._store.grants(customer, creator)
        if not granted:
            raise RefusedError("no read grant from this customer", reason="forbidden")
        return customer, granted

    def _require_customer(self, idurl: str) -> Contract:
        contract = self._store.contract(idurl)
        if contract is None:
            raise RefusedError("no storage contract with this supplier", reason="not_a_customer")
        return contract

    # --- reports -----------------------------------------------------------------------------

    def customers(self) -> list[dict[str, Any]]:
        """Every contract: idurl, allocated and used bytes, since, ecc_map, position."""
        return [
            {"idurl": c.idurl, "allocated": c.allocated, "used": self._store.used_bytes(c.idurl),
             "since": c.since, "ecc_map": c.ecc_map, "position": c.position}
            for c in self._store.contracts()
        ]

    def used_bytes(self, customer_idurl: str) -> int:
        return self._store.used_bytes(customer_idurl)

    def objects(self, customer_idurl: str, prefix: str = "") -> list[dict[str, Any]]:
        """The objects of a customer whose name starts with `prefix`: name, size, sha256."""
        return [o.to_dict() for o in self._store.objects(customer_idurl, prefix)]

    def space_donated(self) -> dict[str, Any]:
        """The reference engine's `space_donated` report."""
        donated = self._donated_bytes()
        contracts = self._store.contracts()
        customers = []
        for c in contracts:
            used = self._store.used_bytes(c.idurl)
            customers.append({"consumed": c.allocated, "idurl": c.idurl, "real": used, "used": used})
        consumed = sum(c.allocated for c in contracts)
        used_total = sum(self._store.used_bytes(c.idurl) for c in contracts)
        return {
            "consumed": consumed,
            "consumed_percent": percent(consumed, donated),
            "customers": customers,
            "customers_num": len(customers),
            "donated": donated,
            "free": donated - consumed,
            "old_customers": [],
            "old_customers_real": 0,
            "old_customers_used": 0,
            "real": used_total,
            "used": used_total,
            "used_percent": percent(used_total, donated),
        }

    # --- internals ---------------------------------------------------------------------------

    def _machine(self, idurl: str) -> CustomerContract:
        machine = self._machines.get(idurl)
        if machine is None:
            machine = CustomerContract(f"customer_contract_{idurl}", self._automats, name="customer_contract")
            self._machines[idurl] = machine
        return machine

    @asynccontextmanager
    async def _customer_lock(self, idurl: str) -> AsyncIterator[None]:
        """Serialise the state-changing requests of one customer; the entry goes when unused."""
        entry = self._locks.get(idurl)
        if entry is None:
            entry = self._locks[idurl] = _CustomerLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[idurl]


def percent(value: int, total: int) -> str:
    """The reference engine's percentage text: 5 decimals, trailing zeros dropped ("20%", "0.35672%")."""
    if not total:
        return "0%"
    return ("%3.7f" % round(100.0 * value / total, 5)).rstrip("0").rstrip(".") + "%"


def _ack(payload: dict[str, Any]) -> dict[str, Any]:
    return {"command": "Ack", "payload": payload}


def _payload(doc: dict[str, Any]) -> dict[str, Any]:
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        raise InvalidArgumentError("payload must be an object", reason="invalid_request")
    return payload


def _idurl(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_IDURL_CHARS:
        raise InvalidArgumentError(f"{what} is missing or too long", reason="invalid_request")
    return value


def _int(value: object, what: str, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise InvalidArgumentError(f"{what} must be an integer from {low} to {high}", reason="invalid_request")
    return value


def _object_name(packet_id: object) -> str:
    """The object name of a Data packet id `<name>:<nonce>`."""
    if not isinstance(packet_id, str) or ":" not in packet_id:
        raise InvalidArgumentError("packet_id must be <name>:<nonce>", reason="bad_name")
    name = packet_id.rpartition(":")[0]
    if not is_valid_name(name):
        raise InvalidArgumentError(f"invalid object name {name!r:.80}", reason="bad_name")
    return name


def _prefix(value: object, allow_empty: bool) -> str:
    """A name prefix: any non-empty prefix of a valid name is itself a valid name."""
    if value == "" and allow_empty:
        return ""
    if not is_valid_name(value):
        raise InvalidArgumentError(f"invalid name prefix {value!r:.80}", reason="bad_name")
    return str(value)


def _ecc_and_position(payload: dict[str, Any]) -> tuple[str, int]:
    """The customer's ecc map and this supplier's place in it; both optional, checked together."""
    ecc_map = payload.get("ecc_map", "")
    position = payload.get("position", -1)
    if not isinstance(ecc_map, str):
        raise InvalidArgumentError("ecc_map must be a string", reason="invalid_request")
    suppliers = blocks.MAX_SUPPLIERS
    if ecc_map:
        try:
            suppliers = blocks.suppliers_of(ecc_map)
        except blocks.BlockError:
            raise InvalidArgumentError(f"unknown ecc map {ecc_map!r:.40}", reason="invalid_request") from None
    return ecc_map, _int(position, "position", -1, suppliers - 1)
