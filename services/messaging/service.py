"""The messaging process's bus endpoints: private messages, history, consumers, friends.

Private messages (`message_send`): the data (a JSON object of at most `MAX_MESSAGE_BYTES` once
encoded, else 413 `message_too_large`) is recorded as pending, sealed to the recipient's master
key (envelope.py) and sent as a `Message` packet; the recipient's Ack makes it delivered, and
says whether a consumer there took it at once (`consumed`). A recipient that cannot be reached
gets it later (courier.py). Arriving `Message` packets come on `inbox.Message` (inbox.py).

Groups (group_endpoints.py, groups.py): a group key shared with members, brokers hired through
the DHT keep each group's ordered queue (broker.py), members pull it in order. Queue packets are
`Message` packets too (`{"queue": <verb>, …}`): they go to the broker, everything else to the
private inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

from common import codec, subjects
from common.endpoint import Reply, endpoint
from common.errors import ConflictError, InvalidArgumentError, NodeError, NotFoundError, UnavailableError
from common.process import ProcessContext, ServiceBase
from services.messaging import envelope
from services.messaging.broker import Broker, is_queue_packet
from services.messaging.group_endpoints import BROKER_OPTION, GROUPS_OPTION, GroupEndpoints
from services.messaging.group_store import GroupStore
from services.messaging.groups import Groups
from services.messaging.membership import is_group_id
from services.messaging.queue_store import QueueStore
from services.messaging.consumers import CONSUMER_ID_RE, DIRECTIONS, MAX_POLLING_TIMEOUT, ConsumerBook
from services.messaging.contacts import CONNECTED, ContactStates, friend_info
from services.messaging.courier import Courier
from services.messaging.inbox import MessageInbox, fail
from services.messaging.metrics import messaging_samples
from services.messaging.peers import BusPeers
from services.messaging.store import DELIVERED, PENDING, MessageStore, StoredMessage
from common.ids import idurl_to_global_id, idurl_of

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024
"""The largest `data` of a private message, as compact JSON (a larger one is refused with 413)."""
MAX_TIMEOUT = 300.0
MAX_LIMIT = 1000
MAX_ALIAS = 100
PRIVATE_OPTION = "services/private-messages/enabled"
HISTORY_OPTION = "services/message-history/enabled"
TTL_OPTION = "services/private-messages/message-ttl"
INBOX_QUEUE = "messaging"
IDENTITY_EVENTS = ("local-identity-created", "local-identity-recovered", "local-identity-rotated",
                   "local-identity-written", "local-identity-erased")
FRIEND_PING_TIMEOUT = 10.0


class TooLargeError(NodeError):
    """A message over `MAX_MESSAGE_BYTES`."""

    status = 413
    reason = "message_too_large"


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{name} must be a number", reason="invalid_argument")
    if not low <= float(value) <= high:
        raise InvalidArgumentError(f"{name} must be between {low:g} and {high:g}", reason="invalid_argument")
    return float(value)


def _count(value: Any, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidArgumentError(f"{name} must be an integer from 0 to {high}", reason="invalid_argument")
    return value


def _message_types(value: Any) -> frozenset[str]:
    if value is None or value == "":
        return frozenset()
    items = [p.strip() for p in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidArgumentError("message_types must be a list of message types", reason="invalid_argument")
    unknown = [i for i in items if i and i not in envelope.MESSAGE_TYPES]
    if unknown:
        raise InvalidArgumentError(f"unknown message type {unknown[0]!r}, expected one of "
                                   f"{', '.join(envelope.MESSAGE_TYPES)}", reason="invalid_argument")
    return frozenset(i for i in items if i)


class MessagingService(GroupEndpoints, ServiceBase):
    """Serves message_*, friend(s)_*, group(s)_*, queue(s)_* and the broker's queue packets."""

    def __init__(self, ctx: ProcessContext):
        super().__init__(ctx)
        self.contacts = ContactStates()
        self.peers = BusPeers(ctx.bus, self.contacts)
        self.store = MessageStore(ctx.home.state("messaging") / "messages.sqlite")
        self.consumers = ConsumerBook()
        self.courier = Courier(self.store, self.peers, self._seal, self._changed, self._private_on)
        self.inbox = MessageInbox(self.store, self.peers, self._arrived, self._ttl)
        state = ctx.home.state("messaging")
        self.group_store = GroupStore(state / "groups.sqlite")
        self.queue_store = QueueStore(state / "queues.sqlite")
        self.broker = Broker(self.queue_store, self.peers, lambda: bool(self.ctx.config.get(BROKER_OPTION)))
        self.groups = Groups(self.group_store, self.store, self.peers, self._arrived, ctx.automats,
                             positions=self._positions, on_fault=self._broker_faulty)
        self.peers.local = self.broker.handle  # a role this node holds itself is reached without the network
        self.contacts.listen(self._presence_changed)
        self._subscriptions: list[Any] = []
        self._courier_task: asyncio.Task[Any] | None = None
        ctx.metrics.register(lambda: messaging_samples(self))

    # ---- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        nc = self.ctx.bus.nc
        self._subscriptions.append(await nc.subscribe(subjects.inbox("Message"), queue=INBOX_QUEUE,
                                                      cb=self._on_inbox))
        self._subscriptions.append(await nc.subscribe(subjects.model("online_status"), cb=self._on_presence))
        for event_id in IDENTITY_EVENTS:
            self._subscriptions.append(await nc.subscribe(subjects.event(event_id), cb=self._on_identity))
        self.ctx.bus.spawn(self._load_presence())
        self._courier_task = self.ctx.bus.spawn(self.courier.run())
        if self.ctx.config.get(GROUPS_OPTION):
            self.groups.restore()

    async def stop(self) -> None:
        await self.groups.close()
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self.courier.drain()
        if self._courier_task is not None:
            self._courier_task.cancel()
        self.store.close()
        self.group_store.close()
        self.queue_store.close()

    async def on_config_changed(self, keys: list[str]) -> None:
        if not keys or PRIVATE_OPTION in keys:
            self.courier.wake()
        if (not keys or GROUPS_OPTION in keys) and self.ctx.config.get(GROUPS_OPTION):
            self.groups.restore()

    def _private_on(self) -> bool:
        return bool(self.ctx.config.get(PRIVATE_OPTION))

    def _ttl(self) -> float:
        return float(self.ctx.config.get(TTL_OPTION))

    def _require(self, option: str, service: str) -> None:
        if not self.ctx.config.get(option):
            raise UnavailableError(f"{service}() is not started", reason="service_not_started")

    # ---- presence --------------------------------------------------------------------------------

    async def _load_presence(self) -> None:
        try:
            for idurl, state in await self.peers.presence_snapshot():
                self.contacts.update(idurl, state)
        except NodeError as err:
            log.info("presence snapshot not available: %s", err.reason)

    async def _on_presence(self, msg: Any) -> None:
        try:
            doc = codec.loads(msg.data)
            idurl, state = str(doc["id"]), str((doc.get("data") or {}).get("contact_state") or "")
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        self.contacts.update(idurl, state)

    def _presence_changed(self, idurl: str, state: str) -> None:
        if state == CONNECTED:
            self.courier.wake(idurl)

    async def _on_identity(self, _msg: Any) -> None:
        self.peers.forget_me()

    # ---- arriving messages -------------------------------------------------------------------------

    async def _on_inbox(self, msg: Any) -> None:
        self.ctx.bus.spawn(self._serve_inbox(msg))

    async def _serve_inbox(self, msg: Any) -> None:
        try:
            doc = codec.loads(msg.data)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            if is_queue_packet(doc.get("payload")):
                reply = await self.broker.handle(str(doc.get("creator_idurl") or ""), doc["payload"])
            elif not self._private_on():
                reply = fail("private_messages_disabled", "this node does not take private messages now")
            else:
                reply = await self.inbox.handle(doc)
        except ValueError:
            reply = fail("malformed", "malformed inbox document")
        except NodeError as err:
            reply = fail("unavailable", err.message)
        except Exception:  # noqa: BLE001 - a peer's packet must never take the process down
            log.exception("inbox Message failed")
            reply = fail("internal_error", "internal error")
        if msg.reply:
            with contextlib.suppress(Exception):
                await self.ctx.bus.nc.publish(msg.reply, codec.dumps(reply))

    async def _arrived(self, message: StoredMessage) -> bool:
        """A new message (received or sent): to consumers, WebSocket clients and model listeners."""
        item = message.stream_item()
        taken = self.consumers.push(item)
        sockets = await self.peers.stream(item)
        consumed = taken or sockets > 0
        if consumed and message.direction == "in":
            message.consumed = True
            self.store.set_consumed(message, time.time())
        await self.ctx.bus.publish_model("message", f"{message.conversation_id}/{message.message_id}", message.doc())
        return consumed

    async def _broker_faulty(self, group: str, broker: str, reason: str) -> None:
        await self.ctx.bus.publish_event("group-broker-faulty", {
            "group_key_id": group, "broker_id": idurl_to_global_id(broker), "broker_idurl": broker, "reason": reason})

    async def _changed(self, message: StoredMessage) -> None:
        await self.ctx.bus.publish_model("message", f"{message.conversation_id}/{message.message_id}", message.doc())
        if message.state == DELIVERED:
            await self.ctx.bus.publish_event("private-message-delivered", {
                "message_id": message.message_id, "recipient": idurl_to_global_id(message.recipient),
                "consumed": message.consumed})

    async def _seal(self, message: StoredMessage) -> dict[str, Any]:
        refresh = message.last_error == "undecryptable"
        key = await self.peers.public_key(message.recipient, refresh=refresh)
        header = envelope.Header(message.msg_type, message.message_id, message.sender, message.recipient,
                                 message.time)
        return await self.peers.seal(key, header, message.data)

    # ---- internal verbs ----------------------------------------------------------------------------

    @endpoint("stats", internal=True)
    async def stats(self) -> dict[str, Any]:
        """Counters: messages by direction and state, dropped packets by reason, consumers."""
        return {"messages": self.store.counts(), "received": self.inbox.received,
                "duplicates": self.inbox.duplicates, "dropped": dict(self.inbox.dropped),
                "consumers": len(self.consumers), "consumers_dropped": self.consumers.dropped,
                "groups": {"received": self.groups.received, "dropped": dict(self.groups.dropped)},
                "broker": {"accepted": self.broker.accepted, "duplicates": self.broker.duplicates,
                           "dropped": dict(self.broker.dropped)}}

    # ---- private messages -------------------------------------------------------------------------

    @endpoint()
    async def message_send(self, recipient_id: str, data: Any, ping_timeout: Any = 15,
                           message_ack_timeout: Any = 15) -> Reply:
        self._require(PRIVATE_OPTION, "service_private_messages")
        if not isinstance(data, dict):
            raise InvalidArgumentError("data must be a JSON object", reason="invalid_data")
        size = len(codec.dumps(data))
        if size > MAX_MESSAGE_BYTES:
            raise TooLargeError(f"message of {size} bytes is over the limit of {MAX_MESSAGE_BYTES} bytes")
        ping = _number(15 if ping_timeout is None else ping_timeout, "ping_timeout", 0, MAX_TIMEOUT)
        ack = _number(15 if message_ack_timeout is None else message_ack_timeout, "message_ack_timeout", 0.1,
                      MAX_TIMEOUT)
        me = (await self.peers.me())["idurl"]
        recipient = await self.peers.resolve(recipient_id)
        if recipient == me:
            raise InvalidArgumentError("a private message cannot be sent to yourself", reason="invalid_recipient")
        now = time.time()
        message = StoredMessage(sender=me, message_id=envelope.new_message_id(), direction="out",
                                recipient=recipient, msg_type="private_message", time=now, data=data,
                                state=PENDING, next_attempt=now + ping + ack, expires=now + self._ttl(),
                                updated=now)
        # Recorded before the first attempt, so a crash mid-attempt leaves it in the outbox; the retry
        # loop leaves it alone until that attempt has had its time.
        self.store.add(message)
        self.ctx.bus.spawn(self._arrived(message))
        message = await self.courier.attempt(message, ping, ack)
        result = {"consumed": message.consumed, "delivered": message.state == DELIVERED, "state": message.state,
                  "message_id": message.message_id, "recipient": idurl_to_global_id(recipient)}
        if message.state == DELIVERED:
            return Reply(result, "message sent")
        result["error"] = message.last_error
        return Reply(result, "recipient is not reachable now, the message will be delivered when it comes back")

    @endpoint()
    async def message_receive(self, consumer_callback_id: str, direction: str = "incoming",
                              message_types: Any = "private_message,group_message",
                              polling_timeout: Any = 60) -> list[dict[str, Any]]:
        self._require(PRIVATE_OPTION, "service_private_messages")
        if not isinstance(consumer_callback_id, str) or not CONSUMER_ID_RE.match(consumer_callback_id):
            raise InvalidArgumentError("consumer_callback_id must be 1 to 128 letters, digits or _.:@$-",
                                       reason="invalid_argument")
        if direction not in DIRECTIONS:
            raise InvalidArgumentError(f"direction must be one of {', '.join(DIRECTIONS)}", reason="invalid_argument")
        types = _message_types(message_types)
        timeout = _number(60 if polling_timeout is None else polling_timeout, "polling_timeout", 0,
                          MAX_POLLING_TIMEOUT)
        try:
            return await self.consumers.poll(consumer_callback_id, direction, types, timeout)
        except OverflowError:
            raise ConflictError("too many message consumers are registered", reason="too_many_consumers") from None

    # ---- history ---------------------------------------------------------------------------------

    @endpoint()
    async def message_history(self, recipient_id: str | None = None, sender_id: str | None = None,
                              message_type: str | None = None, offset: Any = 0, limit: Any = 100
                              ) -> list[dict[str, Any]]:
        self._require(HISTORY_OPTION, "service_message_history")
        start, count = _count(offset, "offset", 10**9), _count(limit, "limit", MAX_LIMIT)
        types = _message_types(message_type)
        named = [i for i in (recipient_id, sender_id) if i]
        if not named:
            raise InvalidArgumentError("recipient_id or sender_id is required", reason="invalid_argument")
        group = next((i for i in named if is_group_id(i)), None)
        if group is not None:
            found = self.store.history(group, types, start, count, arrival_order=True)
            return [{"doc": m.doc()} for m in found]
        me = (await self.peers.me())["idurl"]
        peers = []
        for user_id in named:
            if not isinstance(user_id, str):
                raise InvalidArgumentError("recipient_id and sender_id must be user ids", reason="invalid_argument")
            alias = user_id.split("$", 1)[0] if "$" in user_id else "master"
            if alias != "master":
                return []  # a group or other key: no such conversation kept yet
            peers.append(await self._history_peer(user_id))
        others = [p for p in peers if p != me] or [me]
        found = self.store.history(others[0], types, start, count)
        return [{"doc": m.doc()} for m in found]

    async def _history_peer(self, user_id: str) -> str:
        if "@" not in user_id and "://" not in user_id:
            return await self.peers.resolve(user_id)
        return idurl_of(user_id)

    @endpoint()
    async def message_conversations_list(self, message_types: Any = None, offset: Any = 0,
                                         limit: Any = 100) -> list[dict[str, Any]]:
        """Conversations, the most recently updated first; every group whose key is held is one.

        As in the reference engine, creating or receiving a group key opens its conversation: a
        group with no message yet is listed last, with `messages` 0 and no date (0).
        """
        self._require(HISTORY_OPTION, "service_message_history")
        start, count = _count(offset, "offset", 10**9), _count(limit, "limit", MAX_LIMIT)
        types = _message_types(message_types)
        items = self.store.conversations(types, 0, start + count)
        if not types or "group_message" in types:
            items = sorted(items + await self._empty_group_conversations(), key=lambda i: i["last_updated"],
                           reverse=True)
        aliases = dict(self.store.friends())
        return [self._conversation(item, aliases) for item in items[start:start + count]]

    async def _empty_group_conversations(self) -> list[dict[str, Any]]:
        """A conversation item for each group key held here whose conversation has no message yet."""
        try:
            keys = await self.peers.identity_call("keys_list", timeout=10)
        except NodeError:
            return []  # the identity process is away: the groups with messages are still listed
        talked = self.store.conversation_ids("group_message")
        found = []
        for key in keys or []:
            group = str(key.get("key_id") or "")
            if not str(key.get("alias") or "").startswith("group_") or group in talked:
                continue
            found.append({"conversation_id": group, "msg_type": "group_message", "peer": group, "started": 0,
                          "last_updated": 0, "messages": 0, "last_message_id": ""})
        return found

    def _conversation(self, item: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
        peer = item["peer"]
        if is_group_id(peer):
            record = self.group_store.get(peer)
            machine = self.groups.members.get(peer)
            state = machine.state if machine is not None else "DISCONNECTED"
            return {"conversation_id": item["conversation_id"], "type": item["msg_type"], "started": item["started"],
                    "last_updated": item["last_updated"], "last_message_id": item["last_message_id"],
                    "messages": item["messages"], "key_id": peer, "label": record.label if record else "",
                    "idurl": None, "global_id": None, "state": state, "contact_state": state}
        state = self.contacts.state(peer)
        return {"conversation_id": item["conversation_id"], "type": item["msg_type"], "started": item["started"],
                "last_updated": item["last_updated"], "last_message_id": item["last_message_id"],
                "messages": item["messages"], "key_id": f"master${idurl_to_global_id(peer)}",
                "label": aliases.get(peer) or idurl_to_global_id(peer).split("@", 1)[0], "idurl": peer,
                "global_id": idurl_to_global_id(peer), "state": state, "contact_state": state}

    def model_snapshot(self, model_name: str, query_details: Any = None) -> list[tuple[str, Any]] | None:
        if model_name == "conversation":
            aliases = dict(self.store.friends())
            return [(i["conversation_id"], self._conversation(i, aliases))
                    for i in self.store.conversations(limit=MAX_LIMIT)]
        if model_name == "correspondent":
            return [(idurl, friend_info(idurl, alias, self.contacts.state(idurl)))
                    for idurl, alias in self.store.friends()]
        return None

    # ---- friends ---------------------------------------------------------------------------------

    @endpoint()
    async def friends_list(self) -> list[dict[str, Any]]:
        return [friend_info(idurl, alias, self.contacts.state(idurl)) for idurl, alias in self.store.friends()]

    @endpoint()
    async def friend_add(self, trusted_user_id: str, alias: str = "", share_person_key: Any = True) -> Reply:
        label = alias if isinstance(alias, str) else ""
        if len(label) > MAX_ALIAS:
            raise InvalidArgumentError(f"alias must be at most {MAX_ALIAS} characters", reason="invalid_argument")
        idurl = await self.peers.resolve(trusted_user_id)
        if idurl == (await self.peers.me())["idurl"]:
            raise InvalidArgumentError("can not add my own identity as a new friend", reason="invalid_argument")
        added = self.store.add_friend(idurl, label, time.time())
        info = friend_info(idurl, label, self.contacts.state(idurl))
        await self.ctx.bus.publish_model("correspondent", idurl, info)
        if added:
            await self.ctx.bus.publish_event("friend-added", {"idurl": idurl, "global_id": info["global_id"],
                                                              "alias": label})
        # Keep the friend's presence current: a ping makes the transport connect and report it.
        self.ctx.bus.spawn(self._greet(idurl, share_person_key not in (False, "false", "0", 0)))
        return Reply(info, "new friend has been added" if added else "this friend has been already added")

    async def _greet(self, idurl: str, share_person_key: bool) -> None:
        try:
            await self.peers.ping(idurl, FRIEND_PING_TIMEOUT)
        except NodeError as err:
            log.info("friend %s not reachable now: %s", idurl, err.reason)
            return
        if share_person_key:
            me = await self.peers.me()
            with contextlib.suppress(NodeError):
                await self.peers.share_key(f"person${me['global_id']}", idurl)

    @endpoint()
    async def friend_remove(self, user_id: str) -> Reply:
        idurl = await self._history_peer(user_id) if isinstance(user_id, str) and user_id else ""
        if not idurl or not self.store.remove_friend(idurl):
            raise NotFoundError(f"friend {user_id} was not found", reason="friend_not_found")
        await self.ctx.bus.publish_model("correspondent", idurl, friend_info(idurl, "", self.contacts.state(idurl)),
                                         deleted=True)
        await self.ctx.bus.publish_event("friend-removed", {"idurl": idurl, "global_id": idurl_to_global_id(idurl)})
        return Reply({"idurl": idurl, "global_id": idurl_to_global_id(idurl)}, "friend has been removed")

    # ---- groups: the DHT view (the rest is in group_endpoints.py) ---------------------------------

    @endpoint()
    async def group_info_dht(self, group_creator_id: str) -> list[dict[str, Any]]:
        """The message brokers a group creator published in the DHT (signed `message_broker` records).

        Broker record `n` of a creator lives at key `<creator idurl>:<n>`; the dht process reads
        and verifies it, so a forged record never shows up here.
        """
        creator = (group_creator_id or "").strip()
        if "://" not in creator:
            # A global id `name@host_port` (or a key id `alias$name@host_port`) names an IDURL.
            match = re.match(r"^(?:[^$@]+\$)?([^@$]+)@([^@$:/]+)_([0-9]+)$", creator)
            if not match:
                raise InvalidArgumentError("group_creator_id must be a global id or an IDURL",
                                           reason="invalid_argument")
            name, host, port = match.groups()
            creator = f"http://{host}:{port}/{name}.xml"
        replies = await asyncio.gather(*(
            self.ctx.bus.call_internal("dht", "read_record", record_type="message_broker", key=f"{creator}:{position}")
            for position in range(3)  # the reference engine's REQUIRED_BROKERS_COUNT
        ))
        brokers = []
        for reply in replies:
            if reply.get("read") == "success" and isinstance(reply.get("value"), dict):
                value = dict(reply["value"])
                value.pop("type", None)
                value.pop("key", None)
                brokers.append(value)
        return brokers
