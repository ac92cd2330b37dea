"""Group membership: joining a group's queue, sending to it, and receiving from it in order.

A joined group runs one `GroupMember` machine and one pull loop. The loop asks the group's
brokers (the DHT records of its creator, lowest position first) for the entries after the last
sequence number this node consumed (`fetch`, long-polled), opens each with the group key (in the
identity process, which holds it), records it in history and hands it on, then moves
its `last_seq`. A broker that fails (no answer, its messaging process gone) is skipped for
`BROKER_BACKOFF` seconds and the next position serves; since the member names where it is in
the queue on every fetch, switching brokers neither skips nor repeats a message, and a member
that was away (left, stopped, restarted) gets what it missed, in order, on its next fetch.

Sending: the data is sealed to the group key by the identity process (a fresh AES-256-GCM key per
message, wrapped by the group's RSA public key: brokers see only ciphertext) and offered to the
brokers in position order until one acknowledges it with its sequence number. A resend after a
lost answer carries the same message id, which brokers recognise.

The creator's side (`ensure_brokers`): hire brokers from the DHT's brokers layer for the missing
positions and publish each in a signed `message_broker` record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Protocol

from common.automat import Automat, AutomatRegistry
from common.errors import ConflictError, NodeError, NotFoundError, UnavailableError
from services.messaging import envelope
from services.messaging.broker import request
from services.messaging.courier import fail_reason
from services.messaging.envelope import EnvelopeError
from services.messaging.group_store import GroupRecord, GroupStore, in_order
from services.messaging.membership import alias_of, proof_payload
from services.messaging.queue_store import Entry
from services.messaging.store import DELIVERED, RECEIVED, MessageStore, StoredMessage

log = logging.getLogger(__name__)

POLL_WAIT = 8.0
"""Seconds a broker holds a fetch open when nothing is queued (also bounds failover detection)."""
FETCH_MARGIN = 6.0
PRODUCE_TIMEOUT = 12.0
SEND_DEADLINE = 45.0
BROKER_BACKOFF = 10.0
NO_BROKERS_RETRY = 5.0
HIRE_TIMEOUT = 10.0
HIRE_RETRY = 15.0
"""Seconds between a creator's attempts to fill broker positions still empty (few brokers announced yet)."""
PERMANENT = frozenset({"not_member", "bad_certificate", "forged_sender", "too_large", "malformed"})

IN_SYNC = "IN_SYNC!"


class GroupsNet(Protocol):
    """The node as group members and creators use it (BusPeers in production)."""

    async def my_idurl(self) -> str | None: ...

    async def brokers(self, creator: str, refresh: bool = False) -> list[tuple[int, str]]: ...

    async def request(self, idurl: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    async def group_key(self, key_id: str) -> dict[str, Any]:
        """The key's `public` half and creator `signature` (raises `NotFoundError`)."""

    async def sign_with(self, key_id: str, data: bytes) -> str:
        """Base64 signature of `data` by a private key held by the identity process."""

    async def seal(self, public_key: str, header: envelope.Header, data: dict[str, Any]) -> dict[str, Any]:
        """The payload of `data` sealed for the holder of `public_key` (OpenSSH text)."""

    async def open(self, sealed: envelope.Sealed, key_id: str | None = None) -> bytes:
        """The plaintext of a message sealed for `key_id`; raises `NodeError` (4xx: not for that key)."""

    async def random_brokers(self, count: int) -> list[str]: ...

    async def publish_broker(self, creator: str, position: int, broker: str) -> None: ...


class GroupMember(Automat):
    """One joined group: finding its brokers, connecting to the queue, following it."""

    initial = "DISCONNECTED"
    transitions = {
        ("DISCONNECTED", "connect"): "DHT_READ",
        ("DHT_READ", "brokers-found"): "QUEUE?",
        ("QUEUE?", "queue-connected"): IN_SYNC,
        ("QUEUE?", "brokers-not-found"): "DHT_READ",
        (IN_SYNC, "broker-failed"): "QUEUE?",
        (IN_SYNC, "brokers-not-found"): "DHT_READ",
        ("*", "disconnect"): "DISCONNECTED",
    }

    def __init__(self, group: str, registry: AutomatRegistry | None):
        super().__init__(f"group_member_{alias_of(group)}", registry, name="group_member")
        self.group = group
        self.active_broker = ""
        self.position: int | None = None
        self.consumers: list[str] = []
        self.producers: list[str] = []
        self.last_error = ""


class Groups:
    """The groups this node is a member of, and the creator's broker hiring."""

    def __init__(self, store: GroupStore, history: MessageStore, net: GroupsNet,
                 on_new: Callable[[StoredMessage], Awaitable[bool]], registry: AutomatRegistry | None = None,
                 clock: Callable[[], float] = time.time, poll_wait: float = POLL_WAIT,
                 positions: Callable[[], int] = lambda: 2):
        self.store = store
        self.history = history
        self.net = net
        self.on_new = on_new
        self.registry = registry
        self.clock = clock
        self.poll_wait = poll_wait
        self.positions = positions
        self._hired_at = 0.0
        self.members: dict[str, GroupMember] = {}
        self.dropped: Counter[str] = Counter()
        self.received = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._backoff: dict[str, float] = {}
        self._credentials: dict[str, tuple[dict[str, str], str, str]] = {}
        self._hiring = asyncio.Lock()
        self._consuming: dict[str, asyncio.Lock] = {}

    # ---- life cycle ------------------------------------------------------------------------------

    def restore(self) -> None:
        """Follow again every group that was joined when the process stopped."""
        for record in self.store.all():
            if record.joined:
                self._start(record.group_key_id)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def machine(self, group: str) -> GroupMember:
        found = self.members.get(group)
        if found is None:
            found = self.members[group] = GroupMember(group, self.registry)
        return found

    # ---- join, leave -----------------------------------------------------------------------------

    async def join(self, group: str, label: str, creator: str, wait: bool = True) -> GroupRecord:
        """Join (or rejoin) a group whose key this node holds; with `wait`, connect before returning."""
        await self.credentials(group)
        self.store.upsert(group, label, creator, self.clock())
        self.store.set_joined(group, True, self.clock())
        if wait and self.machine(group).state != IN_SYNC:
            with contextlib.suppress(NodeError):
                await self._poll(group, wait=0)
        self._start(group)
        record = self.store.get(group)
        assert record is not None
        return record

    async def leave(self, group: str) -> GroupRecord:
        """Stop following a group (its position in the queue is kept for a later rejoin)."""
        record = self.store.get(group)
        if record is None:
            raise NotFoundError(f"group {group} was not found", reason="group_not_found")
        task = self._tasks.pop(group, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.store.set_joined(group, False, self.clock())
        machine = self.machine(group)
        broker = machine.active_broker
        machine.fire("disconnect")
        machine.active_broker = ""
        if broker:
            with contextlib.suppress(NodeError):
                cert, proof, _ = await self.credentials(group)
                await self.net.request(broker, request("leave", group, cert=cert, proof=proof), 5.0)
        return record

    def forget(self, group: str) -> None:
        self._credentials.pop(group, None)
        self.store.remove(group)
        machine = self.members.pop(group, None)
        if machine is not None:
            machine.close()

    def _start(self, group: str) -> None:
        task = self._tasks.get(group)
        if task is None or task.done():
            self._tasks[group] = asyncio.ensure_future(self._follow(group))

    # ---- credentials -----------------------------------------------------------------------------

    async def credentials(self, group: str) -> tuple[dict[str, str], str, str]:
        """(certificate, membership proof, my IDURL) for `group`; raises the identity's errors."""
        found = self._credentials.get(group)
        if found is not None:
            return found
        me = await self.net.my_idurl()
        if not me:
            raise UnavailableError("this node has no identity", reason="identity_not_exist")
        key = await self.net.group_key(group)
        if not key.get("signature"):
            raise ConflictError(f"group key {group} carries no certificate from its creator",
                                reason="group_key_not_certified")
        proof = await self.net.sign_with(group, proof_payload(group, me))
        found = ({"public": str(key["public"]), "signature": str(key["signature"])}, proof, me)
        self._credentials[group] = found
        return found

    # ---- following the queue ---------------------------------------------------------------------

    async def _follow(self, group: str) -> None:
        machine = self.machine(group)
        machine.fire("connect")
        while True:
            record = self.store.get(group)
            if record is None or not record.joined:
                return
            try:
                await self._poll(group, self.poll_wait)
            except asyncio.CancelledError:
                raise
            except NodeError as err:
                machine.last_error = err.reason
                await asyncio.sleep(NO_BROKERS_RETRY if err.reason == "no_brokers" else 1.0)
            except Exception:  # noqa: BLE001 - the loop must go on; the next poll tries again
                log.exception("following group %s failed", group)
                await asyncio.sleep(NO_BROKERS_RETRY)

    async def _poll(self, group: str, wait: float) -> None:
        """One fetch from the best broker, its entries consumed; raises `NodeError` when none answers."""
        machine = self.machine(group)
        record = self.store.get(group)
        if record is None:
            raise NotFoundError(f"group {group} was not found", reason="group_not_found")
        brokers = await self.net.brokers(record.creator, refresh=machine.state == "DHT_READ")
        if len(brokers) < self.positions() and record.creator == await self.net.my_idurl() \
                and time.monotonic() - self._hired_at > HIRE_RETRY:
            self._hired_at = time.monotonic()
            asyncio.ensure_future(self._hire_quietly(record.creator))
        if not brokers:
            machine.fire("brokers-not-found")
            raise UnavailableError(f"no brokers of {group} in the DHT yet", reason="no_brokers")
        machine.fire("brokers-found")
        cert, proof, _ = await self.credentials(group)
        payload = request("fetch", group, cert=cert, proof=proof, after=record.last_seq, wait=wait)
        tried: set[str] = set()
        while True:
            # The best broker first; when it fails, the next one at once (a failover costs no poll).
            position, broker = self._pick([b for b in brokers if b[1] not in tried])
            tried.add(broker)
            try:
                reply = await self.net.request(broker, payload, wait + FETCH_MARGIN)
            except NodeError as err:
                self._broker_failed(machine, broker, err.reason)
                if len(tried) < len(brokers):
                    continue
                raise
            if reply.get("command") == "Ack" and isinstance(reply.get("payload"), dict):
                break
            reason = fail_reason(reply)
            self._broker_failed(machine, broker, reason)
            if reason in PERMANENT:
                self._credentials.pop(group, None)
            if len(tried) >= len(brokers):
                raise UnavailableError(f"broker {broker} refused: {reason}", reason="broker_refused")
        answer = reply["payload"]
        self._backoff.pop(broker, None)
        machine.active_broker, machine.position = broker, position
        machine.consumers = [str(c) for c in answer.get("consumers") or []]
        machine.producers = [str(p) for p in answer.get("producers") or []]
        machine.fire("queue-connected")
        await self.consume(group, answer.get("entries") or [])

    def _pick(self, brokers: list[tuple[int, str]]) -> tuple[int, str]:
        """The lowest position not resting after a failure (else the one whose rest ends first)."""
        now = time.monotonic()
        for position, broker in brokers:
            if self._backoff.get(broker, 0.0) <= now:
                return position, broker
        return min(brokers, key=lambda b: self._backoff.get(b[1], 0.0))

    def _broker_failed(self, machine: GroupMember, broker: str, reason: str) -> None:
        log.info("broker %s of %s failed: %s", broker, machine.group, reason)
        self._backoff[broker] = time.monotonic() + BROKER_BACKOFF
        machine.last_error = reason
        machine.fire("broker-failed")

    async def consume(self, group: str, items: list[Any]) -> int:
        """Open, record and hand on the entries after our position, in order; returns how many were new."""
        async with self._consuming.setdefault(group, asyncio.Lock()):
            return await self._consume(group, items)

    async def _consume(self, group: str, items: list[Any]) -> int:
        entries = []
        for item in items:
            try:
                entries.append(Entry.from_wire(item))
            except ValueError:
                self.dropped["malformed"] += 1
        record = self.store.get(group)
        if record is None:
            return 0
        fresh, replays = in_order(record.last_seq, entries)
        if replays:
            self.dropped["replayed"] += replays
        opened = await asyncio.gather(*(self._open(group, e) for e in fresh), return_exceptions=True)
        new = 0
        for entry, result in zip(fresh, opened, strict=True):
            if isinstance(result, NodeError):
                raise result  # the identity process is away: stop here, this entry is fetched again
            if isinstance(result, BaseException):
                raise result
            if result is not None and self.history.add(result):
                self.received += 1
                new += 1
                await self.on_new(result)
            self.store.advance(group, entry.seq)
        return new

    async def _open(self, group: str, entry: Entry) -> StoredMessage | None:
        try:
            sealed = envelope.parse(entry.sealed)
            header = sealed.header
            if header.msg_type != "group_message" or header.recipient != group \
                    or header.sender != entry.sender or header.message_id != entry.message_id:
                raise EnvelopeError("forged_sender", "the entry does not match its sealed header")
            try:
                plain = await self.net.open(sealed, group)
            except NodeError as err:
                if err.status >= 500:
                    raise
                raise EnvelopeError("undecryptable", "the message was not sealed for the group key") from None
            data = envelope.decode_body(plain)
        except EnvelopeError as err:
            self.dropped[err.reason] += 1
            log.warning("group message %s/%d dropped: %s", group, entry.seq, err.reason)
            return None
        mine = header.sender == await self.net.my_idurl()
        return StoredMessage(sender=header.sender, message_id=header.message_id, direction="out" if mine else "in",
                             recipient=group, msg_type="group_message", time=header.time, data=data,
                             state=DELIVERED if mine else RECEIVED, updated=self.clock(), peer=group,
                             conversation_id=group)

    # ---- sending ---------------------------------------------------------------------------------

    async def send(self, group: str, data: dict[str, Any]) -> dict[str, Any]:
        """Seal `data` for the group and have a broker queue it; the broker's answer.

        Raises:
            NotFoundError: the group is not known here (`group_not_found`).
            ConflictError: the group is not joined (`group_not_joined`) or a broker refused us for good.
            UnavailableError: no broker took the message before the deadline (`broker_unavailable`).
        """
        record = self.store.get(group)
        if record is None:
            raise NotFoundError(f"group {group} was not found", reason="group_not_found")
        if not record.joined:
            raise ConflictError(f"group {group} is not joined", reason="group_not_joined")
        cert, proof, me = await self.credentials(group)
        header = envelope.Header("group_message", envelope.new_message_id("group"), me, group, self.clock())
        sealed = await self.net.seal(str(cert["public"]), header, data)
        payload = request("produce", group, cert=cert, proof=proof, sealed=sealed)
        machine = self.machine(group)
        deadline = time.monotonic() + SEND_DEADLINE
        errors: list[str] = []
        while True:
            brokers = await self.net.brokers(record.creator, refresh=bool(errors))
            tried: set[str] = set()
            while brokers and len(tried) < len(brokers):
                position, broker = self._pick([b for b in brokers if b[1] not in tried])
                tried.add(broker)
                try:
                    reply = await self.net.request(broker, payload, PRODUCE_TIMEOUT)
                except NodeError as err:
                    errors.append(err.reason)
                    self._broker_failed(machine, broker, err.reason)
                    continue
                answer = reply.get("payload")
                if reply.get("command") == "Ack" and isinstance(answer, dict):
                    return {"group_key_id": group, "message_id": header.message_id, "sequence_id": answer.get("seq"),
                            "broker_id": broker, "position": position, "duplicate": bool(answer.get("duplicate"))}
                reason = fail_reason(reply)
                errors.append(reason)
                if reason in PERMANENT:
                    self._credentials.pop(group, None)
                    raise ConflictError(f"broker refused the message: {reason}", reason=f"group_{reason}")
                self._broker_failed(machine, broker, reason)
            if time.monotonic() > deadline:
                raise UnavailableError(f"no broker of {group} took the message: {', '.join(errors[-3:]) or 'none'}",
                                       reason="broker_unavailable")
            await asyncio.sleep(1.0)

    # ---- the creator hires brokers ---------------------------------------------------------------

    async def _hire_quietly(self, creator: str) -> None:
        try:
            await self.ensure_brokers(creator, self.positions())
        except NodeError as err:
            log.info("hiring brokers failed: %s", err.reason)

    async def ensure_brokers(self, creator: str, positions: int) -> list[tuple[int, str]]:
        """Hire brokers for the positions of `creator` that have none, and publish them in the DHT."""
        async with self._hiring:
            current = await self.net.brokers(creator, refresh=True)
            taken = {p for p, _ in current}
            hired = {b for _, b in current}
            missing = [p for p in range(positions) if p not in taken]
            if not missing:
                return current
            candidates = [c for c in await self.net.random_brokers(positions + 4) if c not in hired and c != creator]
            for position in missing:
                while candidates:
                    candidate = candidates.pop(0)
                    try:
                        reply = await self.net.request(candidate, request("hire", "", position=position),
                                                       HIRE_TIMEOUT)
                    except NodeError as err:
                        log.info("broker candidate %s not reachable: %s", candidate, err.reason)
                        continue
                    if reply.get("command") != "Ack":
                        log.info("broker candidate %s refused: %s", candidate, fail_reason(reply))
                        continue
                    await self.net.publish_broker(creator, position, candidate)
                    log.info("broker %s hired at position %d", candidate, position)
                    break
            return await self.net.brokers(creator, refresh=True)
