"""Group, broker and queue API methods of the messaging process (a mixin of `MessagingService`).

Decoding and checking parameters, then groups.py (members), broker.py (brokers) and the identity
process (group keys) do the work. A group is its key `group_<hex>$<creator global id>`: a node
knows a group when its identity process holds that key (created here, or shared by
`group_share`, private half included, with the creator's certificate).

Codes: a malformed group key id 400; a group whose key is not held here 404 `group_not_found`;
sending to, leaving or reconnecting a group that is not joined 409 `group_not_joined`; no broker
reachable 503 `broker_unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from common import codec, subjects
from common.endpoint import Reply, endpoint
from common.errors import ConflictError, InvalidArgumentError, NodeError, NotFoundError
from common.process import ServiceBase
from common.values import as_bool
from services.messaging.broker import PRIMARY
from services.messaging.group_store import GroupRecord
from services.messaging.groups import DISCONNECTED, IN_SYNC
from services.messaging.membership import alias_of, check_group_id, creator_of
from services.messaging.queue_store import CONSUMER, PRODUCER
from common.ids import idurl_to_global_id, idurl_of

if TYPE_CHECKING:
    from services.messaging.broker import Broker
    from services.messaging.group_store import GroupStore
    from services.messaging.groups import Groups
    from services.messaging.peers import BusPeers

log = logging.getLogger(__name__)

GROUPS_OPTION = "services/private-groups/enabled"
BROKER_OPTION = "services/message-broker/enabled"
POSITIONS_OPTION = "services/private-groups/broker-positions"
MAX_GROUP_MESSAGE_BYTES = 256 * 1024
"""The largest `data` of a group message, as compact JSON (a larger one is refused with 413)."""


class GroupTooLargeError(NodeError):
    """A group message over `MAX_GROUP_MESSAGE_BYTES`."""

    status = 413
    reason = "message_too_large"


class GroupEndpoints(ServiceBase):
    """group_*, groups_list, message_send_group and queue_* methods."""

    peers: BusPeers
    groups: Groups
    group_store: GroupStore
    broker: Broker

    def _require(self, option: str, service: str) -> None:  # pragma: no cover - provided by the service
        raise NotImplementedError

    def _positions(self) -> int:
        try:
            return max(1, min(3, int(self.ctx.config.get(POSITIONS_OPTION))))
        except (TypeError, ValueError, NodeError):
            return 2

    async def _group_key(self, group_key_id: Any) -> tuple[str, dict[str, Any]]:
        """The checked group key id and its key info; raises 400 / 404 `group_not_found`."""
        group = check_group_id(group_key_id)
        try:
            info = await self.peers.identity_call("key_get", key_id=group, include_signature=True, timeout=10)
        except NodeError as err:
            if err.status == 404:  # errors crossing the bus come back as plain NodeErrors with their status
                raise NotFoundError(f"group {group} was not found", reason="group_not_found") from None
            raise
        return group, dict(info)

    def _item(self, group: str, key: dict[str, Any] | None, record: GroupRecord | None,
              me: str = "") -> dict[str, Any]:
        """A `groups_list` item with the reference's participant fields, and where the member is in the queue.

        The state is the member machine's while the group is joined (CONNECTED when in sync);
        DISCONNECTED for a group known here but not followed (created, left); CLEANED when only
        its key is left. The active queue is named as brokers name it in `queues_list`.
        """
        machine = self.groups.members.get(group)
        joined = bool(record and record.joined)
        if record is None:
            state = "CLEANED"
        elif joined and machine is not None:
            state = machine.state
        else:
            state = DISCONNECTED
        label = (record.label if record else "") or (key or {}).get("label") or ""
        key_info = {k: v for k, v in (key or {}).items() if k not in ("signature", "signature_pubkey")}
        broker = machine.active_broker if machine is not None and joined else ""
        creator_id = idurl_to_global_id(creator_of(group))
        return {
            "active": joined and state == IN_SYNC,
            "alias": alias_of(group),
            "group_key_id": group,
            "group_key_info": key_info,
            "label": label if label != group else "",
            "last_sequence_id": record.last_seq if record else -1,
            "state": state,
            "joined": joined,
            "participant_id": idurl_to_global_id(me) if me else None,
            "creator": creator_id,
            "creator_idurl": creator_of(group),
            "active_supplier_pos": machine.position if machine is not None and broker else None,
            "active_supplier_id": idurl_to_global_id(broker) if broker else None,
            "active_queue_id": f"{alias_of(group)}&{creator_id}&{idurl_to_global_id(broker)}" if broker else None,
            "sequence_head": machine.sequence_head if machine is not None else None,
            "sequence_tail": machine.sequence_tail if machine is not None else None,
            "sequence_count": machine.sequence_count if machine is not None else 0,
        }

    # ---- groups ----------------------------------------------------------------------------------

    @endpoint()
    async def group_create(self, creator_id: str | None = None, key_size: Any = None, label: str = "",
                           timeout: Any = 30) -> Reply:
        self._require(GROUPS_OPTION, "service_private_groups")
        if label is not None and not isinstance(label, str):
            raise InvalidArgumentError("label must be text", reason="invalid_argument")
        me = await self.peers.me()
        if creator_id and idurl_of(str(creator_id)) != me["idurl"]:
            raise InvalidArgumentError("a group can only be created by this node's own identity",
                                       reason="invalid_argument")
        seconds = float(timeout) if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else 30.0
        alias = f"group_{secrets.token_hex(16)}"
        info = await self.peers.identity_call("key_create", key_alias=alias, key_size=key_size, label=label or "")
        group = str(info["key_id"])
        await self.peers.certify_key(group)
        self.group_store.upsert(group, label or "", me["idurl"], time.time())
        try:
            await asyncio.wait_for(self.groups.ensure_brokers(me["idurl"], self._positions()), max(1.0, seconds))
        except (asyncio.TimeoutError, NodeError) as err:
            log.warning("brokers for %s not hired yet: %s", group, getattr(err, "reason", "timeout"))
        result = {k: v for k, v in info.items() if k not in ("key_id", "include_private", "active")}
        result["group_key_id"] = group
        await self.ctx.bus.publish_event("group-created", {"group_key_id": group, "label": label or ""})
        return Reply(result, f"new group {group} created successfully")

    @endpoint()
    async def groups_list(self, only_active: Any = False, include_mine: Any = True,
                          include_granted: Any = True) -> list[dict[str, Any]]:
        active, mine, granted = (as_bool(only_active, "only_active"), as_bool(include_mine, "include_mine"),
                                 as_bool(include_granted, "include_granted"))
        me = (await self.peers.me())["idurl"]
        keys = await self.peers.identity_call("keys_list", timeout=10)
        found = []
        for key in keys or []:
            group = str(key.get("key_id") or "")
            if not str(key.get("alias") or "").startswith("group_"):
                continue
            own = creator_of(group) == me
            if (own and not mine) or (not own and not granted):
                continue
            item = self._item(group, key, self.group_store.get(group), me)
            if active and not item["active"]:
                continue
            found.append(item)
        return found

    @endpoint()
    async def group_info(self, group_key_id: str) -> dict[str, Any]:
        group, key = await self._group_key(group_key_id)
        record = self.group_store.get(group)
        item = self._item(group, key, record, await self._my_idurl())
        machine = self.groups.members.get(group)
        brokers = await self.peers.brokers(creator_of(group))
        item.update({
            "brokers": [{"position": p, "broker_id": idurl_to_global_id(b), "idurl": b} for p, b in brokers],
            "active_broker_id": idurl_to_global_id(machine.active_broker) if machine and machine.active_broker
            else None,
            "active_broker_idurl": machine.active_broker if machine and machine.active_broker else None,
            "active_broker_position": machine.position if machine and machine.active_broker else None,
            "members": machine.consumers if machine else [],
            "producers": machine.producers if machine else [],
            "last_error": machine.last_error if machine else "",
            # What this member refused: messages by reason, and brokers caught breaking the chain.
            "dropped": {reason: n for (g, reason), n in self.groups.group_dropped.items() if g == group},
            "faulty_brokers": self._faults(group),
        })
        return item

    def _faults(self, group: str) -> list[dict[str, Any]]:
        found: dict[str, dict[str, int]] = {}
        for (g, broker, reason), count in self.groups.faults.items():
            if g == group:
                found.setdefault(broker, {})[reason] = count
        return [{"broker_id": idurl_to_global_id(b), "idurl": b, "faults": faults} for b, faults in found.items()]

    @endpoint()
    async def group_join(self, group_key_id: str, publish_events: Any = False, use_dht_cache: Any = True,
                         wait_result: Any = True) -> Reply:
        self._require(GROUPS_OPTION, "service_private_groups")
        group, key = await self._group_key(group_key_id)
        if key.get("is_public"):
            raise ConflictError(f"only the public half of {group} is known here", reason="key_not_private")
        me = (await self.peers.me())["idurl"]
        creator = creator_of(group)
        if creator == me:
            try:
                await self.groups.ensure_brokers(me, self._positions())
            except NodeError as err:
                log.warning("brokers for %s not hired: %s", group, err.reason)
        label = key.get("label") if key.get("label") != group else ""
        record = await self.groups.join(group, str(label or ""), creator, wait=as_bool(wait_result, "wait_result"))
        item = self._item(group, key, record, me)
        await self.ctx.bus.publish_event("group-joined", {"group_key_id": group})
        return Reply(item, f"group {group} joined" if item["active"] else f"group {group} is connecting")

    @endpoint()
    async def group_leave(self, group_key_id: str, erase_key: Any = False) -> Reply:
        group = check_group_id(group_key_id)
        erase = as_bool(erase_key, "erase_key")
        record = self.group_store.get(group)
        if record is None:
            await self._group_key(group)  # 404 when the key is not here either
        if (record is None or not record.joined) and not erase:
            raise ConflictError(f"group {group} is not joined", reason="group_not_joined")
        if record is not None:
            await self.groups.leave(group)
        if erase:
            try:
                await self.peers.identity_call("key_erase", key_id=group)
            except NodeError as err:
                if err.status != 404:
                    raise
            self.groups.forget(group)
        await self.ctx.bus.publish_event("group-left", {"group_key_id": group, "erase_key": erase})
        return Reply({"group_key_id": group, "erase_key": erase}, f"group {group} deactivated")

    @endpoint()
    async def group_reconnect(self, group_key_id: str, use_dht_cache: Any = False) -> Reply:
        self._require(GROUPS_OPTION, "service_private_groups")
        group, key = await self._group_key(group_key_id)
        record = self.group_store.get(group)
        if record is None or not record.joined:
            raise ConflictError(f"group {group} is not joined", reason="group_not_joined")
        await self.groups.leave(group)
        record = await self.groups.join(group, record.label, record.creator)
        item = self._item(group, key, record, await self._my_idurl())
        return Reply(item, f"group {group} reconnected")

    @endpoint()
    async def group_share(self, group_key_id: str | None = None, trusted_user_id: str = "", timeout: Any = 45,
                          publish_events: Any = False, key_id: str | None = None) -> Reply:
        group, key = await self._group_key(group_key_id or key_id)
        if key.get("is_public"):
            raise ConflictError(f"only the public half of {group} is known here", reason="key_not_private")
        if not key.get("signature"):
            await self.peers.certify_key(group)  # a group key made by key_create: certify it now
        seconds = float(timeout) if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else 45.0
        result = await self._share(group, trusted_user_id, seconds)
        return Reply(dict(result, group_key_id=group), f"group {group} was shared with {result.get('trusted_user_id')}")

    async def _share(self, group: str, trusted_user_id: str, seconds: float) -> dict[str, Any]:
        kwargs = {"key_id": group, "trusted_user_id": trusted_user_id, "include_private": True,
                  "include_signature": True, "timeout": seconds}
        reply = await self.ctx.bus.call(subjects.api("identity", "key_share"), kwargs, timeout=seconds + 10)
        return dict(reply)

    # ---- group messages --------------------------------------------------------------------------

    @endpoint()
    async def message_send_group(self, group_key_id: str, data: Any) -> Reply:
        self._require(GROUPS_OPTION, "service_private_groups")
        if not isinstance(data, dict):
            raise InvalidArgumentError("data must be a JSON object", reason="invalid_data")
        size = len(codec.dumps(data))
        if size > MAX_GROUP_MESSAGE_BYTES:
            raise GroupTooLargeError(f"message of {size} bytes is over the limit of {MAX_GROUP_MESSAGE_BYTES} bytes")
        group = check_group_id(group_key_id)
        record = self.group_store.get(group)
        if record is None or not record.joined:
            await self._group_key(group)  # 404 when the key is not held here
            raise ConflictError(f"group {group} is not joined", reason="group_not_joined")
        result = await self.groups.send(group, data)
        return Reply(result, "group message sent")

    # ---- queues ----------------------------------------------------------------------------------

    async def _my_idurl(self) -> str:
        return await self.peers.my_idurl() or ""

    @endpoint()
    async def queues_list(self) -> list[dict[str, Any]]:
        return await self.broker.queues(await self._my_idurl())

    @endpoint()
    async def queue_consumers_list(self) -> list[dict[str, Any]]:
        return self.broker.peers(CONSUMER)

    @endpoint()
    async def queue_producers_list(self) -> list[dict[str, Any]]:
        return self.broker.peers(PRODUCER)

    @endpoint()
    async def queue_keepers_list(self) -> list[dict[str, Any]]:
        """The brokers this node hired as a group creator, each as checked now.

        A broker is CONNECTED only when it answered a request of ours (fetch, produce, or the
        `status` query sent now) within the last minute; OFFLINE when the query found no one,
        REFUSED when it answered with a refusal (no longer hired, service off). The keeper is
        CONNECTED when every position has a CONNECTED broker, DHT_WRITE? while positions are
        unfilled, DEGRADED when some brokers answer and NO_BROKER_ANSWERS when none does.
        """
        me = await self._my_idurl()
        groups = [r for r in self.group_store.all() if r.creator == me]
        if not groups:
            return []
        checked = await self.groups.check_brokers(me, groups[0].group_key_id)
        connected = [b for b in checked if b["state"] == "CONNECTED"]
        if len(checked) < self._positions():
            state = "DHT_WRITE?"
        elif len(connected) == len(checked):
            state = "CONNECTED"
        else:
            state = "DEGRADED" if connected else "NO_BROKER_ANSWERS"
        return [{"customer_id": idurl_to_global_id(me), "customer_idurl": me, "state": state,
                 "groups": [r.group_key_id for r in groups], "brokers": checked}]

    @endpoint()
    async def queue_streams_list(self) -> list[dict[str, Any]]:
        """The group message streams this node serves as a broker, as the reference lists them.

        One per queue: its consumers' and producers' ids, the last sequence id numbered, and
        `active` while members follow the stream here or this broker numbers it (primary), rather
        than only keeping a replica.
        """
        consumers, producers = self.broker.peers(CONSUMER), self.broker.peers(PRODUCER)
        return [{"queue_id": q["queue_id"], "group_key_id": q["group_key_id"],
                 "active": q["role"] == PRIMARY or q["consumers"] > 0,
                 "consumers": [c["consumer_id"] for c in consumers if c["group_key_id"] == q["group_key_id"]],
                 "producers": [p["producer_id"] for p in producers if p["group_key_id"] == q["group_key_id"]],
                 "sequence_id": q["last_sequence_id"]}
                for q in await self.broker.queues(await self._my_idurl())]

    @endpoint()
    async def queue_peddlers_list(self) -> list[dict[str, Any]]:
        """The queues this node serves as a broker, and whether it is numbering them now (primary)."""
        return [{"queue_id": q["queue_id"], "group_key_id": q["group_key_id"], "position": q["position"],
                 "role": q["role"], "state": "ACTIVE" if q["role"] == PRIMARY else "STANDBY",
                 "last_sequence_id": q["last_sequence_id"]} for q in await self.broker.queues(await self._my_idurl())]
