"""The message broker: keeps the ordered queues of the groups whose creators hired it.

A group creator hires up to three brokers (positions 0, 1, 2) and publishes them in the DHT
(`message_broker` records). Every broker of a creator keeps a copy of each of the creator's group
queues; the *active* broker is the lowest position its members and producers can reach.

Protocol (payloads of `Message` packets, `{"v": 1, "queue": <verb>, "group": <group key id>, …}`,
answered with Ack / Fail; the transport has proven the packet's creator):

    hire       creator -> broker      take the job (refused when service_message_broker is off)
    produce    member  -> broker      a sealed, signed message; Ack {seq, link} once it is safely queued
    fetch      member  -> broker      entries after `after`, long-polled up to `wait` seconds
    leave      member  -> broker      forget the consumer
    status     member  -> broker      whether it serves the group now, its last number, `fork` evidence
    replicate  broker  -> broker      entries a broker assigned, to be placed at their numbers
    tail       broker  -> broker      committed entries after `after` (a broker catching up)

Ordering: only the broker that accepts a `produce` assigns its number (one at a time per group,
under a lock), so all members, pulling the same queue, see one order. Durability: the new entry
is stored uncommitted, copied to the other brokers (`replicate`), committed, and only then
acknowledged; consumers are served committed entries only. A broker that (re)starts, or meets a
group for the first time, first copies what the other brokers have beyond its own last entry
(`tail`), so after a failover back to it nothing acknowledged is missing.

Signatures: a produce must carry its sender's signature (envelope.py), checked here before
anything is queued. The broker that numbers an entry signs its chain link (chain.py), which
names the previous link's hash; a replicated or copied entry (from a broker of the group) is
placed only when its sender signed it and its link is signed by the broker it names (perhaps a
former one), names it, and chains from the link before it here. A fetch or status names the
member's last link (`after_hash`, `after_link`): when our link at that place differs, the answer
carries ours as `fork` evidence, so the member sees that two histories exist.

Dedupe: a produce whose message id is already queued is acknowledged with its existing number
(a producer resends an unacknowledged message, with the same id, to the next broker). Members
skip numbers they have consumed. Two brokers assigning the same number at once (a restarted
lower broker and the one that covered for it): the lower position wins an uncommitted race;
the loser drops its entry, catches up and numbers it again.

Membership (membership.py): every produce/fetch carries the group certificate and the sender's
proof; a packet from a non-member, or one naming another sender, is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Protocol

from dataclasses import replace

from common.errors import NodeError
from services.messaging import envelope
from services.messaging.chain import GENESIS, ChainError, Link
from services.messaging.envelope import EnvelopeError
from services.messaging.inbox import ack, fail
from services.messaging.membership import MembershipError, ProofCache, cert_payload, creator_of, is_group_id
from services.messaging.queue_store import CONFLICT, CONSUMER, GAP, OK, PRODUCER, Entry, QueueStore
from services.messaging.signatures import SignatureChecker
from common.ids import idurl_to_global_id

log = logging.getLogger(__name__)

VERSION = 1
MAX_BATCH = 100
MAX_WAIT = 30.0
REPLICATE_TIMEOUT = 8.0
SYNC_TIMEOUT = 6.0
REPLICA_REST = 5.0
"""Seconds a broker that did not answer a `replicate` is skipped (it is sent what it missed when it answers again)."""
ASSIGN_ATTEMPTS = 4
MAX_SEALED_BYTES = 400 * 1024
PRIMARY = "primary"
REPLICA = "replica"


class BrokerNet(Protocol):
    """What a broker needs of the node: who it is, the DHT's broker lists, other nodes, signatures."""

    async def my_idurl(self) -> str | None: ...

    async def brokers(self, creator: str, refresh: bool = False) -> list[tuple[int, str]]:
        """(position, broker IDURL) of the brokers `creator` hired, lowest position first."""

    async def request(self, idurl: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a queue packet; the reply document (`command`, `payload`); raises `NodeError`."""

    async def verify_signature(self, idurl: str, data: bytes, signature: str) -> bool:
        """Whether `signature` (base64) over `data` was made by the master key of `idurl`."""

    async def public_key(self, idurl: str, refresh: bool = False) -> str:
        """The master public key of `idurl` (OpenSSH text); raises `NodeError` (404: nobody)."""

    async def sign_with(self, key_id: str | None, data: bytes) -> str:
        """Base64 signature of `data` by a key of ours (None: the master key)."""


def request(verb: str, group: str, **fields: Any) -> dict[str, Any]:
    """The payload of a queue packet."""
    return {"v": VERSION, "queue": verb, "group": group, **fields}


def is_queue_packet(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("queue"), str)


class Broker:
    """Serves the queue verbs for the groups this node keeps."""

    def __init__(self, store: QueueStore, net: BrokerNet, enabled: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.net = net
        self.enabled = enabled
        self.clock = clock
        self.dropped: Counter[str] = Counter()
        self.accepted = 0
        self.duplicates = 0
        self.roles: dict[str, str] = {}
        self.positions: dict[str, int] = {}
        store.drop_uncommitted()
        # After a restart every kept queue may be behind the brokers that covered for this one.
        self._stale: set[str] = {q["group_key_id"] for q in store.queues()}
        self._locks: dict[str, asyncio.Lock] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._proofs = ProofCache()
        self.signatures = SignatureChecker(net.public_key)
        self._resting: dict[str, float] = {}
        self._verbs: dict[str, Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "hire": self.hire, "produce": self.produce, "fetch": self.fetch, "leave": self.leave,
            "replicate": self.replicate, "tail": self.tail, "status": self.status,
        }

    async def handle(self, sender: str, doc: dict[str, Any]) -> dict[str, Any]:
        """The reply (Ack / Fail) to one queue packet from `sender`."""
        handler = self._verbs.get(str(doc.get("queue")))
        if handler is None or doc.get("v") != VERSION:
            return self._drop("malformed", sender, "unknown queue request")
        if not self.enabled():
            return fail("broker_disabled", "service_message_broker is not running here")
        try:
            return await handler(sender, doc)
        except MembershipError as err:
            return self._drop(err.reason, sender, str(err))
        except EnvelopeError as err:
            return self._drop(err.reason, sender, str(err))
        except ChainError as err:
            return self._drop(err.reason, sender, str(err))
        except (ValueError, KeyError, TypeError):
            return self._drop("malformed", sender, "malformed queue request")

    def _drop(self, reason: str, sender: str, detail: str) -> dict[str, Any]:
        self.dropped[reason] += 1
        log.warning("queue packet from %s dropped: %s", sender, reason)
        return fail(reason, detail)

    # ---- verbs -----------------------------------------------------------------------------------

    async def hire(self, sender: str, doc: dict[str, Any]) -> dict[str, Any]:
        log.info("hired by %s at position %s", sender, doc.get("position"))
        return ack(hired=True, position=doc.get("position"))

    async def produce(self, sender: str, doc: dict[str, Any]) -> dict[str, Any]:
        group, queue = await self._queue(doc)
        self._proofs.check(group, queue["public"], sender, doc.get("proof"))
        raw = doc.get("sealed")
        sealed = envelope.parse(raw)
        assert isinstance(raw, dict)
        header = sealed.header
        if header.msg_type != "group_message" or header.recipient != group:
            raise MembershipError("malformed", "not a message of this group")
        if header.sender != sender:
            raise MembershipError("forged_sender", "the message names another sender than the packet's creator")
        if len(sealed.body) > MAX_SEALED_BYTES:
            raise MembershipError("too_large", "the message is too large")
        if not await self.signatures.valid(sender, sealed.signed_bytes(), sealed.signature):
            raise MembershipError("bad_signature", "the message is not signed by its sender")
        position, brokers = await self._position(queue["creator"])
        async with self._lock(group):
            await self._sync(group, position, brokers)
            for _ in range(ASSIGN_ATTEMPTS):
                found = self.store.find(group, header.message_id)
                if found is not None and found[1]:
                    self.duplicates += 1
                    return ack(seq=found[0].seq, message_id=header.message_id, position=position, duplicate=True,
                               link=found[0].link)
                entry = found[0] if found else await self._append(group, sealed, raw)
                if entry is None:  # another broker's entry took the place while we signed: number it again
                    continue
                outcome = await self._replicate(group, queue, entry, position, brokers)
                current = self.store.get(group, entry.seq)
                if outcome == OK and current is not None and current[0].message_id == entry.message_id:
                    self.store.commit(group, entry.seq)
                    self.store.touch_peer(group, sender, PRODUCER, entry.seq, self.clock())
                    self.accepted += 1
                    self.roles[group] = PRIMARY
                    self._wake(group)
                    return ack(seq=entry.seq, message_id=header.message_id, position=position, link=entry.link)
                # Another broker numbered a message at this place first: take its entries, number ours again.
                self.store.drop(group, entry.seq, entry.message_id)
                self._stale.add(group)
                await self._sync(group, position, brokers)
        return fail("busy", "the queue could not be brought in agreement with the other brokers, try again")

    async def fetch(self, sender: str, doc: dict[str, Any]) -> dict[str, Any]:
        group, queue = await self._queue(doc)
        self._proofs.check(group, queue["public"], sender, doc.get("proof"))
        position, brokers = await self._position(queue["creator"])
        after = doc.get("after")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < -1):
            raise ValueError("after must be an integer >= -1")
        async with self._lock(group):
            if after is not None and after > self.store.last_seq(group):
                self._stale.add(group)  # the member is ahead of us: others have what we missed
            await self._sync(group, position, brokers)
            if after is not None and after > self.store.last_seq(group):
                # The member saw numbers no reachable broker has (their broker is gone): never reuse them,
                # and chain the next link from the member's last one when a broker of the group signed it.
                self.store.raise_floor(group, after, await self._floor_hash(group, after, doc, brokers))
        if after is None:  # a fresh member starts at the end of the queue
            after = self._committed_last(group)
            self.store.touch_peer(group, sender, CONSUMER, after, self.clock())
            return self._batch(group, position, after, [])
        self.store.touch_peer(group, sender, CONSUMER, after, self.clock())
        fork = self._fork_evidence(group, after, doc.get("after_hash"))
        if fork is not None:
            # The member holds another history at this place: show it ours, serve nothing after it.
            reply = self._batch(group, position, after, [])
            reply["payload"]["fork"] = fork
            return reply
        wait = min(max(float(doc.get("wait") or 0), 0.0), MAX_WAIT)
        entries = self.store.tail(group, after, MAX_BATCH)
        if not entries and wait > 0:
            event = self._events.setdefault(group, asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), wait)
            entries = self.store.tail(group, after, MAX_BATCH)
        return self._batch(group, position, after, entries)

    async def status(self, sender: str, doc: dict[str, Any]) -> dict[str, Any]:
        """A member's check that this broker serves the group now (`not_hired` otherwise), and
        whether it holds the member's last link (`after`, `after_hash`): `fork` is ours when not."""
        group, queue = await self._queue(doc)
        self._proofs.check(group, queue["public"], sender, doc.get("proof"))
        position, _ = await self._position(queue["creator"])
        after = doc.get("after")
        fork = self._fork_evidence(group, after, doc.get("after_hash")) if isinstance(after, int) else None
        return ack(position=position, last=self._committed_last(group), fork=fork)

    async def leave(self, sender: str, doc: dict[str, Any]) -> dict[str, Any]:
        group, queue = await self._queue(doc)
        self._proofs.check(group, queue["public"], sender, doc.get("proof"))
        return ack(left=self.store.remove_peer(group, sender, CONSUMER))

    async def replicate(self, sender: str, doc: dict[str, Any]) -> dict[str, Any]:
        group, queue = await self._queue(doc)
        position, brokers = await self._position(queue["creator"])
        theirs = [p for p, idurl in brokers if idurl == sender]
        if not theirs:
            raise MembershipError("not_broker", "the sender is not a broker of this group")
        items = doc["entries"]
        if not isinstance(items, list) or len(items) > MAX_BATCH:
            raise ValueError("entries must be a list")
        result = OK
        for entry in sorted((Entry.from_wire(i) for i in items), key=lambda e: e.seq):
            await self._check_entry(group, entry, brokers)
            outcome = self.store.place(group, entry, replace_uncommitted=theirs[0] < position)
            if outcome in (GAP, CONFLICT):
                result = outcome
                break
        if self.roles.get(group) != PRIMARY or theirs[0] < position:
            self.roles[group] = REPLICA
        self._wake(group)
        return ack(result=result, last=self.store.last_seq(group))

    async def tail(self, sender: str, doc: dict[str, Any]) -> dict[str, Any]:
        group = str(doc["group"])
        queue = self.store.queue(group)
        if queue is None:
            return ack(entries=[], last=-1)
        _, brokers = await self._position(queue["creator"])
        if sender not in [idurl for _, idurl in brokers]:
            raise MembershipError("not_broker", "the sender is not a broker of this group")
        after = int(doc.get("after", -1))
        entries = self.store.tail(group, after, MAX_BATCH)
        return ack(entries=[e.wire() for e in entries], last=self.store.last_seq(group))

    # ---- the chain -------------------------------------------------------------------------------

    def _fork_evidence(self, group: str, after: int, after_hash: Any) -> dict[str, Any] | None:
        """Our committed link at `after` when its hash is not the member's `after_hash`."""
        ours = self.store.get(group, after) if after >= 0 else None
        if ours is None or not ours[1] or not ours[0].link or not isinstance(after_hash, str) or not after_hash:
            return None
        return None if Link.from_wire(ours[0].link).hash() == after_hash else ours[0].link

    def _prev_hash(self, group: str, seq: int) -> str:
        """The hash the link at `seq` names: the link before it here, or the floor a member raised."""
        if seq == 0:
            return GENESIS
        found = self.store.get(group, seq - 1)
        if found is not None and found[0].link:
            return Link.from_wire(found[0].link).hash()
        floor, floor_hash = self.store.floor(group)
        return floor_hash if floor == seq - 1 else GENESIS

    async def _append(self, group: str, sealed: envelope.Sealed, raw: dict[str, Any]) -> Entry | None:
        """Number a new message with a signed link; None when the place was taken while we signed."""
        me = await self.net.my_idurl() or ""
        seq = self.store.last_seq(group) + 1
        header = sealed.header
        link = Link(group, seq, header.message_id, header.sender, sealed.digest(), self._prev_hash(group, seq), me)
        link = replace(link, signature=await self.net.sign_with(None, link.signed_bytes()))
        if self.store.last_seq(group) + 1 != seq:
            return None
        return self.store.append(group, header.message_id, header.sender, raw, self.clock(), link.wire())

    async def _check_entry(self, group: str, entry: Entry, brokers: list[tuple[int, str]]) -> None:
        """Refuse an entry another broker sent unless its link and its sender's signature check out here."""
        link = Link.from_wire(entry.link)
        sealed = envelope.parse(entry.sealed)
        if (link.group, link.seq, link.message_id, link.sender, link.digest) != \
                (group, entry.seq, entry.message_id, entry.sender, sealed.digest()) \
                or sealed.header.sender != entry.sender or sealed.header.message_id != entry.message_id:
            raise ChainError("bad_link", "the link names another entry")
        if entry.seq > 0:
            before = self.store.get(group, entry.seq - 1)
            if before is not None and before[0].link and Link.from_wire(before[0].link).hash() != link.prev:
                raise ChainError("fork", f"entry {entry.seq} does not chain from ours")
        # Its broker may have been replaced since it numbered the entry: its signature is checked, and
        # the entry came from a broker of the group now (replicate and tail check the sender).
        if not await self.signatures.link_signed(link, None):
            raise ChainError("bad_link", "the link is not signed by its broker")
        if not await self.signatures.valid(entry.sender, sealed.signed_bytes(), sealed.signature):
            raise MembershipError("bad_signature", "the message is not signed by its sender")

    async def _floor_hash(self, group: str, after: int, doc: dict[str, Any], brokers: list[tuple[int, str]]) -> str:
        """The hash of the member's last link when a broker of the group signed it, else ""."""
        try:
            link = Link.from_wire(doc.get("after_link"))
        except ChainError:
            return ""
        if link.group != group or link.seq != after or not await self.signatures.link_signed(link, brokers):
            return ""
        return link.hash()

    # ---- helpers ---------------------------------------------------------------------------------

    async def _queue(self, doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The group a request names, registered from its certificate the first time."""
        group = doc.get("group")
        if not is_group_id(group):
            raise MembershipError("malformed", "no group named")
        assert isinstance(group, str)
        known = self.store.queue(group)
        cert: dict[str, Any] = doc["cert"] if isinstance(doc.get("cert"), dict) else {}
        if known is None:
            public, signature = cert.get("public"), cert.get("signature")
            if not isinstance(public, str) or not isinstance(signature, str) or not public or not signature:
                raise MembershipError("bad_certificate", "the group certificate is missing")
            creator = creator_of(group)
            if not await self.net.verify_signature(creator, cert_payload(group, public), signature):
                raise MembershipError("bad_certificate", "the group certificate is not signed by its creator")
            self.store.register(group, creator, public, signature, self.clock())
            self._stale.add(group)
            known = self.store.queue(group)
            assert known is not None
        elif cert.get("public") not in (None, known["public"]):
            raise MembershipError("bad_certificate", "another public key for this group")
        return group, known

    async def _position(self, creator: str) -> tuple[int, list[tuple[int, str]]]:
        """Our position among the creator's brokers, and all of them; raises `not_hired`."""
        me = await self.net.my_idurl()
        brokers = await self.net.brokers(creator)
        mine = [p for p, idurl in brokers if idurl == me]
        if not mine:
            brokers = await self.net.brokers(creator, refresh=True)
            mine = [p for p, idurl in brokers if idurl == me]
        if not mine:
            raise MembershipError("not_hired", "this node is not a broker of the group's creator")
        return mine[0], brokers

    def _lock(self, group: str) -> asyncio.Lock:
        return self._locks.setdefault(group, asyncio.Lock())

    def _wake(self, group: str) -> None:
        event = self._events.pop(group, None)
        if event is not None:
            event.set()

    def _committed_last(self, group: str) -> int:
        last = self.store.last_seq(group)
        while last >= 0:
            found = self.store.get(group, last)
            if found is None or found[1]:
                return last
            last -= 1
        return last

    def _batch(self, group: str, position: int, after: int, entries: list[Entry]) -> dict[str, Any]:
        self.positions[group] = position
        return ack(entries=[e.wire() for e in entries], last=self._committed_last(group), after=after,
                   position=position,
                   consumers=[idurl_to_global_id(p["idurl"]) for p in self.store.peers(CONSUMER, group)],
                   producers=[idurl_to_global_id(p["idurl"]) for p in self.store.peers(PRODUCER, group)])

    def _cert(self, queue: dict[str, Any]) -> dict[str, str]:
        return {"public": queue["public"], "signature": queue["signature"]}

    async def _replicate(self, group: str, queue: dict[str, Any], entry: Entry, position: int,
                         brokers: list[tuple[int, str]]) -> str:
        """Copy `entry` (and what a broker misses before it) to every other broker that answers."""
        now = time.monotonic()
        others = [idurl for p, idurl in brokers if p != position and self._resting.get(idurl, 0.0) <= now]
        if not others:
            return OK
        results = await asyncio.gather(*(self._replicate_to(group, queue, entry, position, idurl)
                                         for idurl in others))
        return CONFLICT if CONFLICT in results else OK

    async def _replicate_to(self, group: str, queue: dict[str, Any], entry: Entry, position: int,
                            idurl: str) -> str:
        entries = [entry]
        for _ in range(50):
            payload = request("replicate", group, cert=self._cert(queue), position=position,
                              entries=[e.wire() for e in entries])
            try:
                reply = await self.net.request(idurl, payload, REPLICATE_TIMEOUT)
            except NodeError as err:
                log.info("broker %s did not take %s/%d: %s", idurl, group, entry.seq, err.reason)
                self._resting[idurl] = time.monotonic() + REPLICA_REST
                return "unreachable"
            answer = reply.get("payload") if reply.get("command") == "Ack" else None
            if not isinstance(answer, dict):
                log.info("broker %s refused %s/%d: %s", idurl, group, entry.seq, reply.get("payload"))
                self._resting[idurl] = time.monotonic() + REPLICA_REST
                return "unreachable"
            self._resting.pop(idurl, None)
            if answer.get("result") == CONFLICT:
                return CONFLICT
            last = int(answer.get("last", -1))
            if answer.get("result") != GAP and last >= entry.seq:
                return OK
            # The other broker is behind: send what it misses up to this entry.
            entries = [e for e in self.store.tail(group, last, MAX_BATCH, committed_only=False) if e.seq <= entry.seq]
            if not entries:
                return OK
        return "unreachable"

    async def _sync(self, group: str, position: int, brokers: list[tuple[int, str]]) -> None:
        """Copy what the other brokers have beyond our last entry (once after a start or a conflict)."""
        if group not in self._stale:
            return
        for _, idurl in [(p, i) for p, i in brokers if p != position]:
            after = self.store.last_seq(group)
            for _ in range(1000):
                try:
                    reply = await self.net.request(idurl, request("tail", group, after=after), SYNC_TIMEOUT)
                except NodeError as err:
                    log.info("broker %s not reachable to catch up %s: %s", idurl, group, err.reason)
                    break
                answer = reply.get("payload") if reply.get("command") == "Ack" else None
                items = answer.get("entries") if isinstance(answer, dict) else None
                if not isinstance(items, list) or not items:
                    break
                placed = 0
                for entry in sorted((Entry.from_wire(i) for i in items), key=lambda e: e.seq):
                    try:
                        await self._check_entry(group, entry, brokers)
                    except (ChainError, MembershipError) as err:
                        self.dropped[err.reason] += 1
                        log.warning("catching up %s from %s stopped at %d: %s", group, idurl, entry.seq, err.reason)
                        break
                    outcome = self.store.place(group, entry, replace_uncommitted=True)
                    if outcome in (GAP, CONFLICT):
                        log.warning("catching up %s from %s stopped at %d: %s", group, idurl, entry.seq, outcome)
                        break
                    placed += 1
                    after = entry.seq
                if placed < len(items) or len(items) < MAX_BATCH:
                    break
        self._stale.discard(group)
        self._wake(group)

    # ---- listings --------------------------------------------------------------------------------

    async def queues(self, me: str) -> list[dict[str, Any]]:
        """The queues kept here, with this broker's position among its creator's (from the DHT)."""
        mine = idurl_to_global_id(me) if me else ""
        found = []
        for queue in self.store.queues():
            group = queue["group_key_id"]
            if group not in self.positions:
                with contextlib.suppress(NodeError):
                    brokers = await self.net.brokers(queue["creator"])
                    for position, idurl in brokers:
                        if idurl == me:
                            self.positions[group] = position
            found.append({
                "queue_id": f"{group.split('$', 1)[0]}&{idurl_to_global_id(queue['creator'])}&{mine}",
                "group_key_id": group, "creator_id": idurl_to_global_id(queue["creator"]),
                "last_sequence_id": queue["last_sequence_id"], "messages": queue["messages"],
                "consumers": len(self.store.peers(CONSUMER, group)),
                "producers": len(self.store.peers(PRODUCER, group)),
                "position": self.positions.get(group), "role": self.roles.get(group, REPLICA),
            })
        return found

    def peers(self, role: str) -> list[dict[str, Any]]:
        return [{f"{role}_id": idurl_to_global_id(p["idurl"]), "idurl": p["idurl"], "group_key_id": p["group_key_id"],
                 "last_sequence_id": p["last_seq"], "messages": p["count"], "last_seen": p["seen"]}
                for p in self.store.peers(role)]
