"""The share_* and shares_list methods of the storage process (a share is a key `share_<random>$owner`).

The keys live in the identity process's keyring; here a share is opened (its catalog read from the
creator's suppliers), granted (the key sent and each supplier told to let the grantee read its
prefix), closed and deleted, and its history kept. Its state is whether its creator's suppliers
answer (`share_access.py`): CONNECTED once enough of them do, as the reference reports it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from common.endpoint import Reply, endpoint
from common.errors import NodeError, NotFoundError
from common.values import as_bool
from services.storage.customer import Customer
from services.storage.share_access import ShareAccessBook
from services.storage.wire import BusPeers
from common.ids import idurl_to_global_id, idurl_of


class SharesEndpoints:
    """Mixed into `StorageService`, which provides `peers`, `customer` and `_share_history`."""

    peers: BusPeers
    customer: Customer
    _share_history: list[dict[str, Any]]

    @property
    def share_access(self) -> ShareAccessBook:
        """The shares' supplier checks, made at first use (this mixin has no constructor of its own)."""
        book: ShareAccessBook | None = getattr(self, "_share_access", None)
        if book is None:
            employer = self.customer.employer
            book = self._share_access = ShareAccessBook(self.peers, employer.idurls, employer.automats)
        return book

    async def _keys(self) -> list[dict[str, Any]]:
        return list(await self.peers.api("identity", "keys_list", wait=10))

    async def _share(self, key_id: str) -> dict[str, Any]:
        for key in await self._keys():
            if key.get("key_id") == key_id and str(key.get("alias", "")).startswith("share_"):
                return key
        raise NotFoundError(f"share {key_id} was not found", reason="key_not_found")

    def _share_info(self, key: dict[str, Any], mine: str | None) -> dict[str, Any]:
        key_id = str(key["key_id"])
        creator_global = key_id.split("$", 1)[1]
        creator = idurl_of(creator_global)
        access = self.share_access.looked_at(key_id, creator, creator == mine)
        found = self.customer.employer.idurls() if creator == mine else access.suppliers
        suppliers = [idurl_to_global_id(s) for s in found if s]
        return {"active": bool(key.get("active", True)), "alias": key.get("alias"), "creator": creator_global,
                "creator_idurl": creator, "key_id": key_id, "label": key.get("label"),
                "ecc_map": f"ecc/{len(suppliers)}x{len(suppliers)}" if suppliers else None, "id": key_id,
                "index": None, "name": key.get("alias"), "revision": -1,
                "state": access.state, "suppliers": suppliers, "mine": creator == mine,
                "suppliers_answered": [idurl_to_global_id(s) for s in found if s in access.answered],
                "files": len([i for i in self.customer.catalog.items(key_id) if i.type == "file"])}

    @endpoint()
    async def shares_list(self, only_active: Any = False, include_mine: Any = True,
                          include_granted: Any = True) -> list[dict[str, Any]]:
        mine = await self.peers.my_idurl()
        found = []
        for key in await self._keys():
            if not str(key.get("alias", "")).startswith("share_"):
                continue
            info = self._share_info(key, mine)
            if as_bool(only_active, "only_active") and not info["active"]:
                continue
            if info["mine"] and not as_bool(include_mine, "include_mine"):
                continue
            if not info["mine"] and not as_bool(include_granted, "include_granted"):
                continue
            found.append(info)
        return found

    @endpoint()
    async def share_info(self, key_id: str) -> dict[str, Any]:
        return self._share_info(await self._share(key_id), await self.peers.my_idurl())

    @endpoint()
    async def share_create(self, owner_id: str | None = None, key_size: Any = None, label: str = "",
                           active: Any = True) -> Reply:
        alias = f"share_{secrets.token_hex(16)}"
        created = await self.peers.api("identity", "key_create", wait=60, key_alias=alias, key_size=key_size,
                                       label=str(label or ""), active=as_bool(active, "active"))
        self._history("created", str(created["key_id"]))
        self.customer.opened_shares.add(str(created["key_id"]))
        self.share_access.check(str(created["key_id"]), await self.peers.my_idurl() or "", True)
        return Reply(dict(created), f"new share {created['key_id']} created successfully")

    @endpoint()
    async def share_delete(self, key_id: str) -> Reply:
        await self._share(key_id)
        erased = await self.customer.delete_key_data(key_id)
        await self.peers.api("identity", "key_erase", wait=20, key_id=key_id)
        self.customer.opened_shares.discard(key_id)
        self.share_access.forget(key_id)
        self._history("deleted", key_id)
        return Reply({"key_id": key_id, "versions_deleted": erased}, f"share {key_id} deleted")

    @endpoint()
    async def share_grant(self, key_id: str, trusted_user_id: str, timeout: Any = 45,
                          publish_events: Any = True) -> Reply:
        share = await self._share(key_id)
        mine = await self.peers.my_idurl()
        if idurl_of(key_id.split("$", 1)[1]) != mine:
            raise NodeError(f"share {key_id} was not created by this node", reason="share_not_mine", status=409)
        grantee = idurl_of(trusted_user_id)
        wait = float(timeout or 45)
        granted = await self.customer.grant(key_id, grantee)
        await self.peers.api("identity", "key_share", wait=wait + 5, key_id=key_id, trusted_user_id=trusted_user_id,
                             include_private=True, timeout=wait)
        self._history("granted", key_id, grantee)
        return Reply({"key_id": key_id, "trusted_user_id": grantee, "suppliers_granted": granted,
                      "label": share.get("label")}, f"share {key_id} granted to {idurl_to_global_id(grantee)}")

    @endpoint()
    async def share_open(self, key_id: str, publish_events: Any = False) -> Reply:
        await self._share(key_id)
        mine = await self.peers.my_idurl()
        creator = idurl_of(key_id.split("$", 1)[1])
        added = 0
        if creator != mine:
            suppliers = await self.peers.suppliers_of(creator)
            if not any(suppliers):
                raise NotFoundError(f"the suppliers of {idurl_to_global_id(creator)} were not found in the DHT",
                                    reason="suppliers_not_found")
            added = await self.customer.restore_index(key_id, creator, suppliers)
        self.customer.opened_shares.add(key_id)
        self.share_access.check(key_id, creator, creator == mine)
        self._history("opened", key_id)
        return Reply({"key_id": key_id, "state": "OPENED", "versions_added": added}, f"share {key_id} opened")

    @endpoint()
    async def share_close(self, key_id: str) -> Reply:
        await self._share(key_id)
        self.customer.opened_shares.discard(key_id)
        self.share_access.close(key_id)
        self._history("closed", key_id)
        return Reply({"key_id": key_id, "state": "CLOSED"}, f"share {key_id} closed")

    @endpoint()
    async def share_history(self) -> list[dict[str, Any]]:
        return list(self._share_history)

    def _history(self, action: str, key_id: str, user: str = "") -> None:
        self._share_history.append({"action": action, "key_id": key_id, "user": user, "time": time.time()})
        del self._share_history[:-1000]
