"""The storage process's bus endpoints: the customer and supplier roles behind the storage API.

Bulk bytes never cross the bus: the transport process hands fragments over as spool files.
Inbox subjects (`inbox.Data`, `inbox.Retrieve`, …) reach the supplier role; the customer role
talks to its suppliers through `transport.send` / `transport.send_file`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from common import codec, subjects
from common.endpoint import Reply, endpoint
from common.errors import InvalidArgumentError, NodeError, NotFoundError
from common.fsutil import user_path
from common.memory import Trimmer
from common.process import ProcessContext, ServiceBase
from common.values import as_bool
from services.storage.catalog import DIR, Item, split_remote_path
from services.storage.contract_rules import ContractRules
from services.storage import customer_home
from services.storage.customer import Customer
from services.storage.employer import FIRED
from services.storage.metrics import StorageMetrics
from services.storage.shares import SharesEndpoints
from services.storage.supplier import SupplierRole
from services.storage.transfers import Job
from services.storage.wire import BusPeers
from common.ids import idurl_to_global_id, idurl_of

log = logging.getLogger(__name__)

SUPPLIER_COMMANDS = ("RequestService", "CancelService", "Data", "Retrieve", "ListFiles", "DeleteFile", "DeleteBackup")
INBOX_QUEUE = "storage"
TICK = 3.0
IDENTITY_EVENTS = ("local-identity-created", "local-identity-recovered", "local-identity-rotated",
                   "local-identity-written", "local-identity-erased")
RESTORE_PATIENCE = 90.0
"""Seconds a recovered identity waits for its suppliers record and catalog before hiring anew."""


REQUIRE_CONTRACT_OPTION = "services/supplier/require-contract"
OVERDUE_GRACE_OPTION = "services/supplier/overdue-grace"


class BusLedger:
    """The ledger process as `contract_rules` asks it: the state of a customer's contract with us."""

    def __init__(self, ctx: ProcessContext):
        self.ctx = ctx

    async def contract_state(self, customer_idurl: str) -> str:
        reply = await self.ctx.bus.call_internal("ledger", "customer_contract", customer_idurl=customer_idurl,
                                                 timeout=30)
        return str(reply["state"])


class StorageService(SharesEndpoints, ServiceBase):
    """Serves files_*, file_*, shares_*, suppliers_*, customers_*, space_* and transfers_list."""

    def __init__(self, ctx: ProcessContext):
        super().__init__(ctx)
        root = ctx.home.state("storage")
        spool = ctx.home.root / "spool"
        self.peers = BusPeers(ctx.bus)
        self._customer_folder, self._spool = root / "customer", spool
        customer_home.discard_set_aside(self._customer_folder)
        self.customer = self._new_customer()
        self.contract_rules = ContractRules(BusLedger(ctx), lambda: bool(ctx.config.get(REQUIRE_CONTRACT_OPTION)),
                                            lambda: float(ctx.config.get(OVERDUE_GRACE_OPTION)))
        self.supplier = SupplierRole(root / "supplier", lambda: int(ctx.config.get("services/supplier/donated-space")),
                                     earlier_idurls=self._earlier_idurls, admit=self.contract_rules.admit)
        self._subscriptions: list[Any] = []
        self._loop: asyncio.Task[Any] | None = None
        self._wake = asyncio.Event()
        self._restore_until: float | None = time.monotonic()
        """While set, the upkeep tries to restore a catalog instead of hiring (once at start)."""
        self._identity_lock = asyncio.Lock()
        """Held by an upkeep round and by the handling of an identity change, so a change never lands
        in the middle of a round: a round begun with no identity (just erased) would otherwise hire
        suppliers for the identity recovered meanwhile, and its catalog would never be restored."""
        self._share_history: list[dict[str, Any]] = []
        # Blocks freed by worker threads stay at the top of their arena: given back once transfers stop.
        self.trimmer = Trimmer(idle=lambda: self.customer.transfers.idle())
        self.counters = StorageMetrics(ctx.metrics, self)

    # ---- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        abandoned = self.customer.abandon_interrupted()
        if abandoned:
            log.warning("abandoned %d interrupted uploads: %s", len(abandoned), abandoned)
        nc = self.ctx.bus.nc
        for command in SUPPLIER_COMMANDS:
            self._subscriptions.append(await nc.subscribe(subjects.inbox(command), queue=INBOX_QUEUE,
                                                          cb=self._on_inbox))
        for event_id in IDENTITY_EVENTS:
            self._subscriptions.append(await nc.subscribe(subjects.event(event_id), cb=self._on_identity))
        self._subscriptions.append(await nc.subscribe(subjects.event("node-disconnected"), cb=self._on_disconnected))
        self._loop = self.ctx.bus.spawn(self._upkeep())
        self.trimmer.start()

    async def stop(self) -> None:
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._loop is not None:
            self._loop.cancel()
        await self.trimmer.stop()
        self.customer.close()
        self.supplier.close()

    async def on_config_changed(self, keys: list[str]) -> None:
        if not keys or any(k.startswith(("services/customer/", "services/employer/")) for k in keys):
            self._wake.set()

    async def _upkeep(self) -> None:
        while True:
            try:
                await self._drop_overdue_customers()
                if self._customer_enabled():
                    async with self._identity_lock:
                        await self._restore_or_tick()
            except asyncio.CancelledError:
                raise
            except NodeError as err:
                log.info("storage upkeep: %s", err.reason)
            except Exception:  # noqa: BLE001 - upkeep goes on whatever one round hit
                log.exception("storage upkeep round failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=TICK)
            self._wake.clear()

    async def _drop_overdue_customers(self) -> None:
        """With contracts required, erase the data of customers overdue past the grace period."""
        try:
            due = await self.contract_rules.to_drop([c["idurl"] for c in self.supplier.customers()])
        except NodeError as err:
            # The ledger cannot say now (down, no engine): nobody is dropped on a guess; the customer role goes on.
            log.info("customers' contracts not checked: %s", err.reason)
            return
        for idurl in due:
            log.warning("customer %s is overdue past the grace period: dropping its data", idurl)
            await self.supplier.reject(idurl)
            await self.ctx.bus.publish_event("customer-dropped-overdue", {"idurl": idurl})

    async def _restore_or_tick(self) -> None:
        """Restore a recovered identity's suppliers and catalog before hiring anyone new."""
        if not await self._check_owner():
            # No identity (erased, not made yet): nothing to restore or hire for. A recovery opens a
            # restore window of its own (`_identity_changed`); a new identity has nothing to restore.
            if self._restore_until is not None and time.monotonic() >= self._restore_until:
                self._restore_until = None
            return
        if self._restore_until is not None:
            if time.monotonic() < self._restore_until and not await self._network_connected():
                return  # the transport comes back under the recovered identity first (used home)
            done = await self.customer.restore_if_empty()
            if not done and time.monotonic() < self._restore_until:
                return
            self._restore_until = None
        await self.customer.employer.tick()

    async def _set_option(self, key: str, value: Any) -> None:
        """Change an option through the api process (which owns the file), then read it back here."""
        await self.peers.api("api", "config_set", wait=10, key=key, value=value)
        self.ctx.config.reload()

    def _customer_enabled(self) -> bool:
        return bool(self.ctx.config.get("services/customer/enabled"))

    async def _network_connected(self) -> bool:
        """Is the transport up (waiting a round for it)? Suppliers asked before would all be offline."""
        try:
            await self.peers.api("transport", "network_connected", wait=TICK + 5, wait_timeout=TICK)
        except NodeError:
            return False
        return True

    def _new_customer(self) -> Customer:
        return Customer(self._customer_folder, self._spool, self.peers, self.ctx.automats, self.ctx.config.get,
                        self._emit, set_option=self._set_option)

    async def _check_owner(self) -> bool:
        """The customer state is the present identity's: made for another key, it ends now.

        False when this node has no identity now.
        """
        me = await self.peers.me()
        if not me or not me.get("publickey"):
            return False
        owner = customer_home.owner_of(self._customer_folder)
        if owner is not None and not customer_home.same_owner(owner, me):
            log.warning("the customer state here belongs to another identity: ending it before %s uses this node",
                        me.get("global_id"))
            await self._end_customer_state()
        if owner != customer_home.claim_of(me):
            customer_home.claim(self._customer_folder, me)
        return True

    async def _end_customer_state(self) -> None:
        """The identity left this node (erased, taken over): its suppliers, catalog, transfers and
        opened shares go with it, so the next identity starts, and a recovered one restores its
        own, as on a fresh home. The suppliers keep its contracts and data for wherever it went."""
        self.customer.close()
        trash = customer_home.set_aside(self._customer_folder)
        self.customer = self._new_customer()
        self._restore_until = max(self._restore_until or 0.0, time.monotonic())
        await self._emit("customer-state-ended", {})
        if trash is not None:
            await asyncio.to_thread(shutil.rmtree, trash, True)

    async def _on_identity(self, msg: Any) -> None:
        async with self._identity_lock:
            await self._identity_changed(msg)
        self._wake.set()

    async def _identity_changed(self, msg: Any) -> None:
        self.peers.forget_me()
        if msg.subject == subjects.event("local-identity-erased") and await self.peers.me() is None:
            await self._end_customer_state()
        if msg.subject == subjects.event("local-identity-recovered"):
            self._restore_until = time.monotonic() + RESTORE_PATIENCE
        if msg.subject == subjects.event("local-identity-rotated"):
            try:
                data = codec.loads(msg.data).get("data") or {}
                old, new = str(data["old_idurl"]), str(data["new_idurl"])
            except (ValueError, AttributeError, KeyError):
                log.warning("local-identity-rotated without its IDURLs")
            else:
                self.customer.identity_rotated(idurl_to_global_id(old), idurl_to_global_id(new))

    async def _earlier_idurls(self, idurl: str) -> list[str]:
        """Where a (verified) identity was before: the sources it lists besides itself."""
        doc = await self.ctx.bus.call_internal("identity", "fetch", timeout=10, idurl=idurl)
        return [str(s) for s in doc.get("sources") or [] if s != idurl]

    async def _on_disconnected(self, msg: Any) -> None:
        try:
            idurl = str((codec.loads(msg.data).get("data") or {}).get("idurl") or "")
        except (ValueError, AttributeError):
            return
        if idurl:
            self.customer.employer.mark_offline(idurl)

    async def _on_inbox(self, msg: Any) -> None:
        self.ctx.bus.spawn(self._serve_inbox(msg))

    async def _serve_inbox(self, msg: Any) -> None:
        try:
            doc = codec.loads(msg.data)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            if not self.ctx.config.get("services/supplier/enabled"):
                reply: dict[str, Any] = {"command": "Fail", "payload": {"reason": "supplier_disabled",
                                                                        "error": "this node is not a supplier"}}
            else:
                reply = await self.supplier.on_inbox(doc)
        except ValueError:
            reply = {"command": "Fail", "payload": {"reason": "invalid_request", "error": "malformed inbox document"}}
        except Exception:  # noqa: BLE001 - a peer's request must never take the process down
            log.exception("inbox request failed")
            reply = {"command": "Fail", "payload": {"reason": "internal_error", "error": "internal error"}}
        if msg.reply:
            with contextlib.suppress(Exception):
                await self.ctx.bus.nc.publish(msg.reply, codec.dumps(reply))

    async def _emit(self, event_id: str, data: dict[str, Any]) -> None:
        self.counters.observe(event_id, data)
        await self.ctx.bus.publish_event(event_id, data)

    # ---- internal verbs (network_status) ------------------------------------------------------------

    @endpoint("suppliers_idurls", internal=True)
    async def suppliers_idurls(self) -> dict[str, Any]:
        return {"idurls": [i for i in self.customer.employer.idurls() if i],
                "desired": self.customer.employer.desired}

    @endpoint("customers_idurls", internal=True)
    async def customers_idurls(self) -> dict[str, Any]:
        return {"idurls": [c["idurl"] for c in self.supplier.customers()]}

    # ---- catalog ----------------------------------------------------------------------------------

    def _item_info(self, item: Item, include_uploads: bool = True, include_downloads: bool = True) -> dict[str, Any]:
        catalog = self.customer.catalog
        owner = item.owner_idurl or ""
        global_id = item.key_id.split("$", 1)[-1]
        versions = catalog.versions(item.id)
        latest = next((v for v in versions if v.state in ("ready", "degraded")), None)
        info: dict[str, Any] = {
            "customer": global_id, "idurl": owner or idurl_of(global_id), "key_id": item.key_id,
            "key_alias": item.key_id.split("$", 1)[0], "global_id": f"{item.key_id}:{item.id}",
            "path_id": str(item.id), "path": item.path, "name": item.name, "remote_path": item.remote_path,
            "type": item.type, "size": latest.size if latest else 0,
            "latest": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(latest.created)) if latest else "",
            "versions": [self._version_info(item, v) for v in versions],
        }
        if item.type == DIR:
            info["childs"] = catalog.children(item)
        if include_uploads:
            job = self.customer.transfers.uploads.get(item.remote_path)
            running = [job.info()] if job and not job.done.is_set() else []
            info["uploads"] = {"pending": [], "running": running}
        if include_downloads:
            job = self.customer.transfers.downloads.get(item.remote_path)
            info["downloads"] = [job.info()] if job and not job.done.is_set() else []
        return info

    def _version_info(self, item: Item, version: Any) -> dict[str, Any]:
        job = self.customer.transfers.uploads.get(item.remote_path)
        progress = "100%" if version.state in ("ready", "degraded") else "0%"
        if job is not None and job.uid == version.uid:
            progress = job.progress if version.state == "uploading" else progress
        n = version.suppliers
        return {"backup_id": f"{item.remote_path}/{version.uid}", "version": version.uid, "state": version.state,
                "progress": progress, "size": version.size, "time": version.created,
                "label": time.strftime("%Y-%m-%d %I:%M:%S %p", time.localtime(version.created)),
                "error": version.error, "ecc_map": f"ecc/{n}x{n}", **self.customer.version_health(version)}

    def _item(self, remote_path: str) -> Item:
        key_id, path = split_remote_path(remote_path)
        return self.customer.catalog.require_item(key_id, path)

    @endpoint()
    async def files_list(self, remote_path: str | None = None, key_id: str | None = None, recursive: Any = True,
                         all_customers: Any = False, include_uploads: Any = False,
                         include_downloads: Any = False) -> list[dict[str, Any]]:
        deep = as_bool(recursive, "recursive")
        catalog = self.customer.catalog
        if remote_path:
            item = self._item(remote_path)
            items = [item] if item.type != DIR else catalog.items(item.key_id, item.path, recursive=deep)
        else:
            items = catalog.items(key_id or None, recursive=deep)
            if not as_bool(all_customers, "all_customers"):
                items = [i for i in items if not i.owner_idurl or key_id]
        return [self._item_info(i, as_bool(include_uploads, "include_uploads"),
                                as_bool(include_downloads, "include_downloads")) for i in items]

    @endpoint()
    async def file_exists(self, remote_path: str) -> dict[str, Any]:
        key_id, path = split_remote_path(remote_path)
        item = self.customer.catalog.item(key_id, path)
        if item is None:
            return {"exist": False, "remote_path": f"{key_id}:{path}"}
        return {"exist": True, "remote_path": item.remote_path, "path_id": str(item.id), "type": item.type,
                "key_id": key_id, "path": path}

    @endpoint()
    async def file_info(self, remote_path: str, include_uploads: Any = True, include_downloads: Any = True) -> Any:
        return self._item_info(self._item(remote_path), as_bool(include_uploads, "include_uploads"),
                               as_bool(include_downloads, "include_downloads"))

    @endpoint()
    async def file_create(self, remote_path: str, as_folder: Any = False, exist_ok: Any = False,
                          force_path_id: Any = None) -> Reply:
        key_id, path = split_remote_path(remote_path)
        await self.customer.check_key(key_id)
        kind = DIR if as_bool(as_folder, "as_folder") else "file"
        item, created = self.customer.catalog.create(key_id, path, kind, exist_ok=as_bool(exist_ok, "exist_ok"))
        self.customer.backup_later(key_id)
        result = {"created": created, "customer": idurl_of(key_id.split("$", 1)[1]), "global_id":
                  f"{key_id}:{item.id}", "key_id": key_id, "path": path, "path_id": str(item.id),
                  "remote_path": item.remote_path, "type": "dir" if kind == DIR else "file"}
        what = "folder" if kind == DIR else "file"
        return Reply(result, f"new {what} created in {key_id}:{item.id} successfully")

    @endpoint()
    async def file_delete(self, remote_path: str) -> Reply:
        item = await self.customer.delete(remote_path)
        return Reply({"deleted": True, "remote_path": item.remote_path, "path_id": str(item.id)},
                     f"item {item.remote_path} was deleted")

    @endpoint()
    async def file_explore(self, local_path: str) -> list[dict[str, Any]]:
        if not local_path:
            raise NotFoundError("local_path is empty", reason="local_path_not_found")
        folder = user_path(local_path, "local_path")
        if not folder.exists():
            raise NotFoundError(f"local path {local_path} does not exist", reason="local_path_not_found")
        if folder.is_file():
            entries = [folder]
        else:
            entries = sorted(folder.iterdir())[:10000]
        found = []
        for entry in entries:
            with contextlib.suppress(OSError):
                stat = entry.stat()
                found.append({"name": entry.name, "path": str(entry), "type": "dir" if entry.is_dir() else "file",
                              "size": stat.st_size if entry.is_file() else 0, "modified": stat.st_mtime})
        return found

    @endpoint()
    async def files_sync(self) -> Reply:
        report = await self.customer.sync()
        await self.customer.backup_index(f"master${(await self.peers.me() or {}).get('global_id', '')}")
        return Reply(report, "the catalog and the suppliers are in line")

    # ---- uploads --------------------------------------------------------------------------------

    @endpoint()
    async def file_upload_start(self, local_path: str, remote_path: str, wait_result: Any = False,
                                publish_events: Any = False) -> Reply:
        jobs = await self.customer.start_upload(local_path, remote_path)
        key_id, path = split_remote_path(remote_path)
        if as_bool(wait_result, "wait_result"):
            await asyncio.gather(*(job.done.wait() for job in jobs))
            failed = [j for j in jobs if j.state not in ("ready", "degraded")]
            if failed:
                raise NodeError(f"upload of {failed[0].remote_path} failed: {failed[0].error}",
                                reason="upload_failed", status=503)
        first = jobs[0] if jobs else None
        degraded = [j for j in jobs if j.state == "degraded"]
        state = "ready" if all(j.state == "ready" for j in jobs) else "degraded" if degraded and all(
            j.state in ("ready", "degraded") for j in jobs) else "uploading"
        result = {"key_id": key_id, "remote_path": f"{key_id}:{path}", "source_path": str(local_path),
                  "path_id": str(self.customer.catalog.require_item(key_id, path).id),
                  "version": first.uid if first and len(jobs) == 1 else None,
                  "versions": [{"remote_path": j.remote_path, "version": j.uid, "state": j.state,
                                "size": j.total_size, "missing_positions": j.missing_positions} for j in jobs],
                  "state": state}
        if state == "degraded":
            return Reply(result, f"{key_id}:{path} uploaded degraded: positions {degraded[0].missing_positions} "
                                 "lack fragments and are being repaired")
        if as_bool(wait_result, "wait_result"):
            return Reply(result, f"{key_id}:{path} uploaded successfully")
        return Reply(result, f"uploading task for {key_id}:{path} started, local path is {local_path}")

    @endpoint()
    async def files_uploads(self, include_running: Any = True, include_pending: Any = True) -> dict[str, Any]:
        running = [j.info() for j in self.customer.transfers.uploads.values() if not j.done.is_set()]
        return {"running": running if as_bool(include_running, "include_running") else [], "pending": [],
                "finished": [j.info() for j in self.customer.transfers.uploads.values() if j.done.is_set()][-20:]}

    @endpoint()
    async def file_upload_stop(self, remote_path: str) -> Reply:
        return await self._stopped(self.customer.stop_upload, remote_path, "uploading")

    # ---- downloads ------------------------------------------------------------------------------

    @endpoint()
    async def file_download_start(self, remote_path: str, destination_path: str | None = None,
                                  wait_result: Any = False, publish_events: Any = False,
                                  destination_folder: str | None = None, local_path: str | None = None) -> Reply:
        destination = destination_path or destination_folder or local_path
        jobs = await self.customer.start_download(remote_path, destination)
        key_id, path = split_remote_path(remote_path)
        item = self._item(remote_path)
        if item.type == DIR:
            target = str(Path(jobs[0][1]).parents[len(Path(jobs[0][0].remote_path.split(":", 1)[1]).parts)
                                                  - len(Path(path).parts) - 1]) if jobs else ""
        else:
            target = str(jobs[0][1]) if jobs else ""
        if as_bool(wait_result, "wait_result"):
            for job, _ in jobs:
                await job.done.wait()
            failed = [j for j, _ in jobs if j.state != "ready"]
            if failed:
                raise NodeError(f"download of {failed[0].remote_path} failed: {failed[0].error}",
                                reason="download_failed", status=503)
        done = all(j.state == "ready" for j, _ in jobs)
        result = {"backup_id": f"{item.remote_path}/{jobs[0][0].uid}" if len(jobs) == 1 else None,
                  "downloaded": done, "key_id": key_id, "local_path": target, "path_id": str(item.id),
                  "remote_path": path, "files": len(jobs)}
        message = (f"{item.remote_path} downloaded to {target} successfully" if done
                   else f"downloading task {item.remote_path} started, destination is {target}")
        return Reply(result, message)

    @endpoint()
    async def files_downloads(self) -> list[dict[str, Any]]:
        return [j.info() for j in self.customer.transfers.downloads.values() if not j.done.is_set()]

    @endpoint()
    async def file_download_stop(self, remote_path: str) -> Reply:
        return await self._stopped(self.customer.stop_download, remote_path, "downloading")

    @staticmethod
    async def _stopped(stop: Callable[[str], Job], remote_path: str, what: str) -> Reply:
        """Stop the transfer of `remote_path` and answer once it has ended."""
        key_id, path = split_remote_path(remote_path)
        job = stop(f"{key_id}:{path}")
        await job.done.wait()
        return Reply(job.info(), f"{what} of {job.remote_path} stopped")

    @endpoint()
    async def transfers_list(self) -> list[dict[str, Any]]:
        transfers = self.customer.transfers
        items = []
        for pos in self.customer.employer.positions:
            if not pos.idurl:
                continue
            outgoing = [j.info() for j in transfers.uploads.values() if not j.done.is_set()]
            outgoing += [j.info() for key, j in transfers.rebuilds.items()
                         if key == str(pos.index) and not j.done.is_set()]
            incoming = [j.info() for j in transfers.downloads.values() if not j.done.is_set()]
            items.append({"idurl": pos.idurl, "global_id": idurl_to_global_id(pos.idurl), "position": pos.index,
                          "incoming": incoming, "outgoing": outgoing})
        return items

    # ---- suppliers (customer role) ----------------------------------------------------------------

    @endpoint()
    async def suppliers_list(self, customer_id: str | None = None, verbose: Any = False) -> list[dict[str, Any]]:
        if customer_id:
            me = await self.peers.my_idurl()
            idurl = idurl_of(customer_id)
            if idurl != me:
                suppliers = await self.peers.suppliers_of(idurl)
                return [{"position": i, "idurl": s, "global_id": idurl_to_global_id(s) if s else "",
                         "supplier_state": None, "contact_state": await self.peers.contact_state(s) if s else None}
                        for i, s in enumerate(suppliers)]
        return await self.customer.suppliers_list()

    @endpoint()
    async def supplier_change(self, position: Any = None, supplier_id: str | None = None,
                              new_supplier_id: str | None = None) -> Reply:
        employer = self.customer.employer
        if position not in (None, ""):
            try:
                index = int(position)
            except (TypeError, ValueError):
                raise InvalidArgumentError("position must be an integer", reason="invalid_argument") from None
        elif supplier_id:
            found = employer.position_of(idurl_of(supplier_id))
            if found is None:
                raise NotFoundError(f"{supplier_id} is not one of my suppliers", reason="supplier_not_found")
            index = found
        else:
            raise InvalidArgumentError("position or supplier_id is required", reason="invalid_argument")
        if not 0 <= index < len(employer.positions):
            raise InvalidArgumentError(f"position must be 0..{len(employer.positions) - 1}", reason="invalid_argument")
        old = employer.positions[index].idurl
        pos = await employer.change(index, idurl_of(new_supplier_id) if new_supplier_id else None)
        return Reply({"position": index, "old_idurl": old, "idurl": pos.idurl, "supplier_state": pos.state,
                      "global_id": idurl_to_global_id(pos.idurl)},
                     f"supplier {idurl_to_global_id(old) if old else '-'} at position {index} will be replaced by "
                     f"{idurl_to_global_id(pos.idurl)}")

    @endpoint()
    async def suppliers_ping(self) -> Reply:
        await self.customer.employer.ping_all()
        return Reply(await self.customer.suppliers_list(), "requests to all suppliers were sent")

    @endpoint()
    async def space_consumed(self) -> dict[str, Any]:
        return self.customer.space_consumed()

    @endpoint()
    async def space_local(self) -> dict[str, Any]:
        root = self.ctx.home.root
        usage = await asyncio.to_thread(shutil.disk_usage, root)
        sizes = await asyncio.to_thread(_folder_sizes, root)
        total = sum(sizes.values())
        return {"backups": sizes.get("customer", 0), "customers": sizes.get("supplier", 0),
                "temp": sizes.get("spool", 0), "total": total, "diskfree": usage.free, "disktotal": usage.total,
                "diskfree_percent": f"{usage.free * 100 / usage.total:.5f}%",
                "total_percent": f"{total * 100 / usage.total:.5f}%"}

    # ---- customers (supplier role) ----------------------------------------------------------------

    @endpoint()
    async def customers_list(self, verbose: Any = False) -> list[dict[str, Any]]:
        items = []
        for i, contract in enumerate(self.supplier.customers()):
            idurl = contract["idurl"]
            items.append({"idurl": idurl, "global_id": idurl_to_global_id(idurl), "position": i,
                          "contact_state": await self.peers.contact_state(idurl),
                          **({k: v for k, v in contract.items() if k != "idurl"}
                             if as_bool(verbose, "verbose") else {})})
        return items

    @endpoint()
    async def customer_reject(self, customer_id: str, erase_customer_key: Any = True) -> Reply:
        idurl = idurl_of(customer_id)
        if idurl not in {c["idurl"] for c in self.supplier.customers()}:
            raise NotFoundError(f"{customer_id} is not a customer of this node", reason="customer_not_found")
        result = await self.supplier.reject(idurl)
        return Reply(result, f"customer {idurl_to_global_id(idurl)} was rejected and its data erased")

    @endpoint()
    async def customers_ping(self) -> Reply:
        found = []
        for contract in self.supplier.customers():
            state = "OFFLINE"
            with contextlib.suppress(NodeError):
                reply = await self.peers.api("transport", "user_status_check", wait=15, user_id=contract["idurl"])
                state = str(reply.get("contact_state") or state)
            found.append({"idurl": contract["idurl"], "global_id": idurl_to_global_id(contract["idurl"]),
                          "contact_state": state})
        return Reply(found, "requests to all customers were sent")

    @endpoint()
    async def space_donated(self) -> dict[str, Any]:
        return self.supplier.space_donated()

    # ---- models ------------------------------------------------------------------------------------

    def model_snapshot(self, model_name: str, query_details: Any = None) -> list[tuple[str, Any]] | None:
        if model_name != "supplier":
            return None
        return [(p.idurl, {"position": p.index, "idurl": p.idurl, "supplier_state": p.state})
                for p in self.customer.employer.positions if p.idurl and p.state != FIRED]


def _folder_sizes(root: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, folder in (("customer", root / "state" / "storage" / "customer"),
                         ("supplier", root / "state" / "storage" / "supplier"), ("spool", root / "spool")):
        total = 0
        for dirpath, _, files in os.walk(folder):
            for file in files:
                with contextlib.suppress(OSError):
                    total += (Path(dirpath) / file).stat().st_size
        sizes[name] = total
    return sizes
