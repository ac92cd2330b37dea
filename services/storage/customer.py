"""The customer role: catalog, suppliers, uploads, downloads, rebuilds, catalog backups, shares.

No bus code here: the other processes are reached through `wire.BusPeers`-like objects passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from common import crypto
from common.automat import AutomatRegistry
from common.errors import ConflictError, InvalidArgumentError, NodeError, NotFoundError
from common.fsutil import user_path
from common.packet import MAX_BLOCK_SIZE
from services.storage import blocks
from services.storage.backup_index import fetch_newest, seal_index
from services.storage.catalog import (DEGRADED, DIR, FAILED, FILE, READABLE, READY, UPLOADING, Catalog, Item, Version,
                                      split_remote_path)
from services.storage.employer import CONNECTED, OFFLINE, Employer
from services.storage.fragments import Mover, index_name, key_tag, version_prefix
from services.storage.transfers import Job, Transfers
from common.ids import idurl_to_global_id

log = logging.getLogger(__name__)

SUPPLIERS_NUMBER = "services/customer/suppliers-number"
MAX_LISTING_PAGES = 1000
"""A supplier's listing in pages of 10,000 names: 10 million fragments at most."""

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
INDEX_TIMEOUT = 30.0
REPAIR_RETRY = 15.0
"""Seconds between rounds of repairing degraded versions while some position cannot take its fragments."""


class Customer:
    """Everything the customer side of the storage process does."""

    def __init__(self, folder: Path, spool: Path, peers: Any, automats: AutomatRegistry | None,
                 option: Callable[[str], Any], emit: Emit,
                 set_option: Callable[[str, Any], Awaitable[None]] | None = None):
        self.folder = folder
        self.peers = peers
        self.option = option
        self.set_option = set_option
        self.emit = emit
        self.catalog = Catalog(folder / "catalog.sqlite")
        self.mover = Mover(peers.wire, spool)
        self.employer = Employer(folder, peers, automats, option, on_replaced=self._on_replaced,
                                 on_connected=self._on_connected)
        self.transfers = Transfers(self.catalog, self.mover, emit, self.employer.note, current=self.employer.idurls)
        self.opened_shares: set[str] = set()
        self._repairer: asyncio.Task[None] | None = None
        self._repair_wake = asyncio.Event()
        self._backups: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- start-up -------------------------------------------------------------------------------

    def abandon_interrupted(self) -> list[str]:
        """Versions left `uploading` by a crash are cleanly abandoned: marked failed, fragments deleted."""
        abandoned = []
        for version in self.catalog.all_versions(UPLOADING):
            self.catalog.finish_version(version.uid, "failed", version.size, version.blocks_total,
                                        "interrupted: the storage process stopped during the upload")
            abandoned.append(version.uid)
            item = self.catalog.item_by_id(version.item_id)
            if item is not None:
                self.spawn(self._delete_remote(item.key_id, [version.uid]))
        if self._degraded():
            self.repair_later()
        return abandoned

    async def restore_if_empty(self) -> bool:
        """On a fresh home with a (recovered) identity: adopt the suppliers from the DHT, restore the catalog.

        True once there is nothing (more) to do: the catalog exists, or was asked of the suppliers
        (those employed already, else those the DHT lists). False while there is no identity, or no
        suppliers to ask yet. Suppliers employed with an empty catalog are asked too: a restore
        interrupted after adopting them (a crash) is finished at the next start.
        """
        me = await self.peers.me()
        if not me:
            return False
        if self.catalog.items():
            return True
        idurl = str(me["idurl"])
        suppliers = self.employer.idurls()
        if not any(suppliers):
            record = await self.peers.suppliers_record(idurl)
            suppliers = [str(i or "") for i in record.get("suppliers") or []]
            if not any(suppliers):
                return False
            if len(suppliers) != int(self.option(SUPPLIERS_NUMBER)) and self.set_option is not None:
                # The adopted layout stays: hiring down to the default count would cancel suppliers.
                await self.set_option(SUPPLIERS_NUMBER, len(suppliers))
            self.employer.adopt(suppliers, int(record.get("revision") or 0))
            log.info("adopted the %d suppliers of %s from the DHT", len(suppliers), me["global_id"])
            self.spawn(self.employer.ping_all())
        key_id = f"master${me['global_id']}"
        try:
            await self.restore_index(key_id, idurl, suppliers)
        except NodeError as err:
            log.warning("catalog of %s not restored: %s", key_id, err.message)
        return True

    def identity_rotated(self, old_global_id: str, new_global_id: str) -> None:
        """Our keys were renamed with the identity: the catalog follows, the suppliers record and
        catalog backups are published again under the new names (fragment names do not change)."""
        renamed = self.catalog.rename_owner(old_global_id, new_global_id)
        for old, new in renamed:
            if old in self.opened_shares:
                self.opened_shares.discard(old)
                self.opened_shares.add(new)
            self.backup_later(new)
        self.employer.republish()
        log.info("identity rotated from %s to %s: %d keys renamed in the catalog", old_global_id, new_global_id,
                 len(renamed))

    async def restore_index(self, key_id: str, owner_idurl: str, suppliers: list[str]) -> int:
        """Read the catalog backup of `key_id` from every supplier and merge the newest; versions added."""
        customer = None if owner_idurl == await self.peers.my_idurl() else owner_idurl
        doc = await fetch_newest(self.peers, suppliers, key_id, owner_idurl, customer, INDEX_TIMEOUT)
        added = self.catalog.import_index(doc, owner_idurl="" if customer is None else owner_idurl)
        await self.emit("catalog-restored", {"key_id": key_id, "versions": added})
        return added

    # ---- paths ----------------------------------------------------------------------------------

    async def check_key(self, key_id: str) -> None:
        try:
            await self.peers.public_key(key_id)
        except NodeError:
            raise NotFoundError(f"key {key_id} was not found", reason="key_not_found") from None

    def suppliers_for(self, item: Item) -> list[str]:
        return self.employer.idurls()

    # ---- catalog backup -------------------------------------------------------------------------

    def backup_later(self, key_id: str) -> None:
        """Back up the catalog of `key_id` to the suppliers soon (changes in a burst make one backup)."""
        self._dirty.add(key_id)
        running = self._backups.get(key_id)
        if running is None or running.done():
            self._backups[key_id] = self.spawn(self._backup_loop(key_id))

    async def _backup_loop(self, key_id: str) -> None:
        while key_id in self._dirty:
            self._dirty.discard(key_id)
            await asyncio.sleep(0.2)
            try:
                await self.backup_index(key_id)
            except NodeError as err:
                log.warning("catalog backup of %s failed: %s", key_id, err.reason)

    async def backup_index(self, key_id: str) -> int:
        me = await self.peers.my_idurl()
        suppliers = [s for s in self.employer.idurls() if s]
        if not me or not suppliers:
            return 0
        blob = await seal_index(self.peers, self.catalog.export(key_id), key_id, me)
        digest = blocks.sha256_hex(blob)
        results = await asyncio.gather(*(self.mover.send(s, index_name(key_id), blob, digest) for s in suppliers))
        stored = sum(ok for ok, _ in results)
        await self.emit("catalog-backed-up", {"key_id": key_id, "suppliers": stored})
        return stored

    # ---- upload -----------------------------------------------------------------------------------

    async def start_upload(self, local_path: str, remote_path: str) -> list[Job]:
        if not local_path:
            raise NotFoundError("local_path is empty", reason="local_path_not_found")
        source = user_path(local_path, "local_path")
        if not source.exists():
            raise NotFoundError(f"local file or folder {local_path} not exist", reason="local_path_not_found")
        key_id, path = split_remote_path(remote_path)
        await self.check_key(key_id)
        suppliers = self.employer.idurls()
        n = len(suppliers)
        k = blocks.data_shares(max(1, n))
        live = len(self.employer.connected())
        if n == 0 or live < k:
            raise ConflictError(f"{live} of {n} suppliers are connected, {k} needed to store data",
                                reason="no_suppliers")
        files = _walk(source)
        total = sum(size for _, size in files)
        self._check_quota(total, n)
        jobs = []
        for file_path, size in files:
            target = path if file_path == source else f"{path}/{file_path.relative_to(source).as_posix()}"
            jobs.append(await self._start_one(key_id, target, file_path, size, suppliers))
        return jobs

    def _check_quota(self, total: int, suppliers: int) -> None:
        needed = int(self.option("services/customer/needed-space"))
        used = self.catalog.totals()["stored"] * 2
        extra = total * suppliers // max(1, blocks.data_shares(suppliers))
        if used + extra > needed:
            raise ConflictError(f"upload needs {extra} bytes on suppliers, {max(0, needed - used)} of the "
                                f"{needed} bytes of services/customer/needed-space are left", reason="over_quota")

    async def _start_one(self, key_id: str, path: str, source: Path, size: int, suppliers: list[str]) -> Job:
        item, _ = self.catalog.create(key_id, path, FILE, exist_ok=True)
        remote = f"{key_id}:{path}"
        if remote in self.transfers.uploads and not self.transfers.uploads[remote].done.is_set():
            raise ConflictError(f"{remote} is already being uploaded", reason="upload_running")
        session = crypto_session()
        wrapped = await _wrap(self.peers, key_id, session)
        block_size = min(int(self.option("services/backups/block-size")),
                         int(self.option("services/backups/max-block-size")), MAX_BLOCK_SIZE)
        version = self.catalog.add_version(item, block_size, len(suppliers), wrapped, str(source))
        job = Job("upload", remote, key_id, version.uid, size, str(source), block_size, len(suppliers))
        self.transfers.uploads[remote] = job
        window = int(self.option("services/backups/upload-window"))
        job.task = self.spawn(self.transfers.upload(job, item, source, session, list(suppliers), window,
                                                    self._upload_ready))
        await self.emit("upload-started", job.info())
        return job

    async def _upload_ready(self, item: Item, version: Version) -> None:
        """An upload ended readable: a ready one may retire older versions, a degraded one is repaired."""
        if version.state == READY:
            self._retain(item)
        else:
            self.repair_later()
        self.backup_later(item.key_id)

    def _retain(self, item: Item) -> list[str]:
        """Apply `max-copies` to `item`: only ready versions count.

        The newest `max-copies` ready versions stay, older ready ones go; failed and degraded
        versions go once a newer ready version exists (a degraded one newer than every ready one
        stays, being repaired). Uploads running are never touched. The uids removed.
        """
        keep = max(1, int(self.option("services/backups/max-copies")))
        versions = self.catalog.versions(item.id)
        ready = [v for v in versions if v.state == READY]
        if not ready:
            return []
        newest = ready[0]
        doomed = ready[keep:] + [v for v in versions if v.state in (FAILED, DEGRADED)
                                 and (v.created, v.uid) < (newest.created, newest.uid)]
        for victim in doomed:
            self.catalog.delete_version(victim.uid)
        if doomed:
            self.spawn(self._delete_remote(item.key_id, [v.uid for v in doomed]))
        return [v.uid for v in doomed]

    async def _delete_remote(self, key_id: str, uids: list[str]) -> None:
        for supplier in [s for s in self.employer.idurls() if s]:
            for uid in uids:
                try:
                    await self.peers.request(supplier, "DeleteBackup", {"prefix": version_prefix(key_id, uid)}, 20)
                except NodeError as err:
                    log.info("DeleteBackup on %s failed: %s", supplier, err.reason)

    def stop_upload(self, remote_path: str) -> Job:
        return _cancel(self.transfers.uploads, remote_path, "upload")

    # ---- download ---------------------------------------------------------------------------------

    async def start_download(self, remote_path: str, destination: str | None) -> list[tuple[Job, Path]]:
        key_id, path = split_remote_path(remote_path)
        item = self.catalog.require_item(key_id, path)
        root = user_path(destination, "destination_path") if destination else self.folder.parent / "restore"
        if root.exists() and not root.is_dir():
            raise InvalidArgumentError(f"destination {root} is not a folder", reason="invalid_destination")
        targets: list[tuple[Item, Path]] = []
        if item.type == DIR:
            for child in self.catalog.items(key_id, item.path):
                if child.type == FILE:
                    targets.append((child, root / item.name / child.path[len(item.path) + 1:]))
        else:
            targets.append((item, root / item.name))
        jobs = []
        for child, target in targets:
            version = self.catalog.latest_readable(child.id)
            if version is None:
                if item.type == DIR:
                    continue
                raise NotFoundError(f"{remote_path} has no complete version yet", reason="version_not_found")
            jobs.append((await self._start_download(child, version, target), target))
        if item.type == DIR:
            (root / item.name).mkdir(parents=True, exist_ok=True)
        return jobs

    async def _start_download(self, item: Item, version: Version, target: Path) -> Job:
        owner = item.owner_idurl or None
        suppliers = await self.peers.suppliers_of(owner) if owner else self.employer.idurls()
        session = await self.peers.unwrap(item.key_id, _unb64(version.wrapped_key))
        job = Job("download", item.remote_path, item.key_id, version.uid, version.size, str(target),
                  version.block_size, version.suppliers)
        self.transfers.downloads[item.remote_path] = job
        offline = {p.idurl for p in self.employer.positions if p.state == OFFLINE}
        window = int(self.option("services/backups/upload-window"))
        job.task = self.spawn(self.transfers.download(job, version, session, suppliers, owner, target, window,
                                                      offline))
        job.task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return job

    def stop_download(self, remote_path: str) -> Job:
        return _cancel(self.transfers.downloads, remote_path, "download")

    # ---- delete -----------------------------------------------------------------------------------

    async def delete(self, remote_path: str) -> Item:
        key_id, path = split_remote_path(remote_path)
        item = self.catalog.require_item(key_id, path)
        uids = self.catalog.delete_item(item)
        if uids:
            self.spawn(self._delete_remote(key_id, uids))
        self.backup_later(key_id)
        return item

    # ---- rebuild ----------------------------------------------------------------------------------

    async def _on_replaced(self, position: int, old: str, new: str) -> None:
        # The new supplier holds nothing yet: every version is degraded at this position until rebuilt.
        self.catalog.forget_position(position, len(self.employer.positions))
        self.spawn(self.rebuild(position))

    def _on_connected(self, position: int) -> None:
        """A supplier (re)connected: the fragments it lacks can be sent now."""
        if self._degraded():
            self.repair_later()

    async def rebuild(self, position: int) -> Job:
        suppliers = self.employer.idurls()
        versions = []
        for version in self.catalog.all_versions():
            item = self.catalog.item_by_id(version.item_id)
            if version.state in READABLE and item is not None and not item.owner_idurl:
                versions.append((item.key_id, version))
        job = Job("rebuild", f"position {position}", "", "", sum(v.size for _, v in versions), suppliers[position],
                  0, len(suppliers))
        self.transfers.rebuilds[str(position)] = job
        await self.emit("rebuild-started", {"position": position, "supplier": suppliers[position]})
        sent = await self.transfers.rebuild_position(job, position, suppliers, versions)
        self._retain_repaired([v for _, v in versions])
        if self._degraded():
            self.repair_later()
        for key_id in {k for k, _ in versions} | {f"master${(await self.peers.me() or {}).get('global_id')}"}:
            self.backup_later(key_id)
        await self.emit("rebuild-finished", {"position": position, "supplier": suppliers[position],
                                             "fragments": sent, "state": job.state, "error": job.error})
        return job

    # ---- background repair ------------------------------------------------------------------------

    def _degraded(self) -> list[tuple[Item, Version]]:
        """Our own degraded versions (a share's owner repairs its own)."""
        found = []
        for version in self.catalog.all_versions(DEGRADED):
            item = self.catalog.item_by_id(version.item_id)
            if item is not None and not item.owner_idurl:
                found.append((item, version))
        return found

    def repair_later(self) -> None:
        """Repair degraded versions in the background (one task; woken again by each call)."""
        self._repair_wake.set()
        if self._repairer is None or self._repairer.done():
            self._repairer = self.spawn(self._repair_loop())

    async def _repair_loop(self) -> None:
        while self._degraded():
            self._repair_wake.clear()
            try:
                await self.repair_degraded()
            except NodeError as err:
                log.info("repair of degraded versions: %s", err.reason)
            if not self._degraded():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._repair_wake.wait(), timeout=REPAIR_RETRY)

    async def repair_degraded(self) -> int:
        """One round: send every degraded version the fragments its connected positions lack; stored."""
        suppliers = self.employer.idurls()
        usable = {p.index for p in self.employer.positions if p.idurl and p.state == CONNECTED}
        stored = 0
        repaired = []
        for item, version in self._degraded():
            sent, _ = await self.transfers.repair_version(item.key_id, version, suppliers, usable)
            stored += sent
            after = self.catalog.version(version.uid)
            if after is not None and after.state == READY:
                repaired.append(after)
                await self.emit("version-repaired", {"remote_path": item.remote_path, "version": version.uid,
                                                     "fragments": sent})
        self._retain_repaired(repaired)
        return stored

    def _retain_repaired(self, versions: list[Version]) -> None:
        """Versions that became ready may retire older ones; their catalogs are backed up again."""
        for item_id in {v.item_id for v in versions if (self.catalog.version(v.uid) or v).state == READY}:
            item = self.catalog.item_by_id(item_id)
            if item is not None:
                self._retain(item)
                self.backup_later(item.key_id)

    # ---- sync ---------------------------------------------------------------------------------------

    async def sync(self) -> dict[str, Any]:
        """`files_sync`: ask every supplier what it holds; resend what is missing, delete what is unknown.

        What a supplier lists with the right sha256 counts as stored, what it does not list as lost.
        Only names of versions the catalog does not hold at all are deleted, the catalog read after
        the listing arrived: a running upload's version is in the catalog before its first fragment
        leaves, so its fragments are never taken for orphans.
        """
        suppliers = self.employer.idurls()
        report: dict[str, Any] = {"suppliers": [], "missing": 0, "repaired": 0, "orphans_deleted": 0}
        for position, supplier in enumerate(suppliers):
            if not supplier:
                continue
            try:
                files = await self._listing(supplier)
            except (NodeError, AttributeError, TypeError, KeyError):
                report["suppliers"].append({"position": position, "idurl": supplier, "state": "unreachable"})
                continue
            missing = 0
            degraded = [v for _, v in self._degraded()]
            for item, version in self._readable_own():
                if version.suppliers != len(suppliers) or self.employer.idurls()[position] != supplier:
                    continue
                for block in self.catalog.blocks(version.uid):
                    name = self.transfers.fragment_name(item.key_id, version.uid, block.block_no, position)
                    held = files.get(name) == block.hashes[position]
                    if not held:
                        missing += 1
                    if held != (position not in block.missing()):
                        self.catalog.mark_stored(version.uid, block.block_no, [position], stored=held)
                self.catalog.settle(version.uid)
                stored, _ = await self.transfers.repair_version(item.key_id, version, suppliers, {position})
                report["repaired"] += stored
            self._retain_repaired(degraded)
            everything = [(self.catalog.item_by_id(v.item_id), v) for v in self.catalog.all_versions()]
            prefixes = {f"{key_tag(i.key_id)}.{v.uid}." for i, v in everything if i is not None}
            tags = {key_tag(item.key_id) for item in self.catalog.items()}
            orphans = sorted({n.rsplit(".", 2)[0] + "." for n in files
                              if not n.endswith(".index") and not any(n.startswith(p) for p in prefixes)
                              and n.split(".", 1)[0] in tags})
            for prefix in orphans:
                try:
                    await self.peers.request(supplier, "DeleteBackup", {"prefix": prefix}, 20)
                    report["orphans_deleted"] += 1
                except NodeError:
                    pass
            report["missing"] += missing
            report["suppliers"].append({"position": position, "idurl": supplier, "state": "synced",
                                        "missing": missing, "objects": len(files)})
        if self._degraded():
            self.repair_later()
        return report

    def _readable_own(self) -> list[tuple[Item, Version]]:
        found = []
        for version in self.catalog.all_versions():
            item = self.catalog.item_by_id(version.item_id)
            if version.state in READABLE and item is not None and not item.owner_idurl:
                found.append((item, version))
        return found

    async def _listing(self, supplier: str) -> dict[str, str]:
        """Every name a supplier holds for us with its sha256, page by page (`truncated` pages go on
        `after` the last)."""
        names: dict[str, str] = {}
        after = ""
        for _ in range(MAX_LISTING_PAGES):
            reply = await self.peers.request(supplier, "ListFiles", {"after": after} if after else {}, 30)
            payload = reply.get("payload") or {}
            page = [str(f["name"]) for f in payload.get("files") or []]
            names.update({str(f["name"]): str(f.get("sha256") or "") for f in payload.get("files") or []})
            if not payload.get("truncated") or not page or max(page) <= after:
                return names
            after = max(page)
        raise NodeError(f"{supplier} lists more than {MAX_LISTING_PAGES} pages", reason="listing_too_long")

    # ---- shares -----------------------------------------------------------------------------------

    async def grant(self, key_id: str, grantee_idurl: str) -> int:
        """Let `grantee_idurl` read the share's fragments on every supplier; suppliers that agreed."""
        payload = {"service": "supplier_access", "grantee_idurl": grantee_idurl, "prefix": key_tag(key_id) + ".",
                   "revoke": False}
        granted = 0
        for supplier in [s for s in self.employer.idurls() if s]:
            try:
                reply = await self.peers.request(supplier, "RequestService", payload, 20)
                granted += reply.get("command") == "Ack"
            except NodeError as err:
                log.info("grant on %s failed: %s", supplier, err.reason)
        await self.backup_index(key_id)
        return granted

    async def delete_key_data(self, key_id: str) -> int:
        items = [i for i in self.catalog.items(key_id) if "/" not in i.path]
        uids: list[str] = []
        for item in items:
            uids.extend(self.catalog.delete_item(item))
        for supplier in [s for s in self.employer.idurls() if s]:
            try:
                await self.peers.request(supplier, "DeleteBackup", {"prefix": key_tag(key_id) + "."}, 20)
            except NodeError:
                pass
        return len(uids)

    # ---- views --------------------------------------------------------------------------------

    def version_health(self, version: Version) -> dict[str, Any]:
        """How `version` is stored, from the catalog alone: `reliable` (the weakest block's share of
        verified fragments), `delivered` (all verified fragments' share), per-position counts and
        the positions missing any fragment."""
        health = self.catalog.health(version)
        n = max(1, version.suppliers)
        total = health.fragments
        held = sum(health.per_position)
        weakest = health.weakest if health.blocks else (n if version.state in READABLE else 0)
        return {"reliable": _percent(weakest, n), "delivered": _percent(held, total) if total else
                ("100%" if version.state in READABLE else "0%"),
                "fragments": total, "max_block": max(0, health.blocks - 1), "weak_block": health.weak_block,
                "missing_positions": health.missing_positions,
                "suppliers": [{"position": p, "fragments": count, "stored": _percent(count, total) if total else "0%"}
                              for p, count in enumerate(health.per_position)]}

    async def suppliers_list(self) -> list[dict[str, Any]]:
        states = await asyncio.gather(*(self.peers.contact_state(p.idurl) if p.idurl else _none()
                                        for p in self.employer.positions))
        items = []
        for pos, contact in zip(self.employer.positions, states, strict=False):
            items.append({"position": pos.index, "idurl": pos.idurl,
                          "global_id": idurl_to_global_id(pos.idurl) if pos.idurl else "",
                          "supplier_state": pos.state or None, "contact_state": contact or "OFFLINE",
                          "connected": _date(pos.connected_at) if pos.connected_at else None})
        return items

    def space_consumed(self) -> dict[str, Any]:
        totals = self.catalog.totals()
        n = len(self.employer.positions)
        needed = int(self.option("services/customer/needed-space"))
        used = totals["stored"] * max(1, n) // max(1, blocks.data_shares(max(1, n)))
        per = needed // max(1, n) if n else 0
        return {"available": max(0, needed - used), "available_per_supplier": max(0, per - used // max(1, n)),
                "my_backups_size": totals["stored"], "my_catalog_items": totals["files"] + totals["folders"],
                "my_files": totals["files"], "my_files_size": totals["files_size"], "my_folders": totals["folders"],
                "my_folders_size": 0, "my_keys": totals["keys"], "needed": needed, "needed_per_supplier": per,
                "shared_backups_size": 0, "shared_catalog_items": 0, "shared_files": 0, "shared_files_size": 0,
                "shared_folders": 0, "shared_folders_size": 0, "shared_keys": 0, "suppliers_num": n,
                "used": used, "used_per_supplier": used // max(1, n),
                "used_percent": f"{used * 100 / needed:.3f}%" if needed else "0%"}

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.employer.close()
        self.catalog.close()


def _cancel(jobs: dict[str, Job], remote_path: str, kind: str) -> Job:
    """Cancel the running job of `remote_path`; raises `NotFoundError` (`<kind>_not_found`)."""
    job = jobs.get(remote_path)
    if job is None or job.done.is_set():
        raise NotFoundError(f"no {kind} of {remote_path} is running", reason=f"{kind}_not_found")
    if job.task is not None:
        job.task.cancel()
    return job


def _walk(source: Path) -> list[tuple[Path, int]]:
    if source.is_file():
        return [(source, source.stat().st_size)]
    found = []
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                found.append((path, path.stat().st_size))
    return found


def crypto_session() -> bytes:
    return crypto.new_session_key()


async def _wrap(peers: Any, key_id: str, session: bytes) -> str:
    return crypto.b64(crypto.wrap_key(await peers.public_key(key_id), session))


def _unb64(text: str) -> bytes:
    return crypto.unb64(text)


async def _none() -> str:
    return ""


def _percent(part: int, whole: int) -> str:
    """`part` of `whole` as the API shows it ("100%", "75%", "33.33%")."""
    value = round(part * 100 / max(1, whole), 2)
    return f"{value:g}%"


def _date(ts: float) -> str:
    return time.strftime("%d-%m-%Y %H:%M:%S", time.localtime(ts))
