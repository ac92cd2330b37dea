"""Group membership: joining a group's queue, sending to it, and receiving from it in order.

A joined group runs one `GroupMember` machine and one pull loop. The loop asks the group's
brokers (the DHT records of its creator, lowest position first) for the entries after the last
sequence number this node consumed (`fetch`, long-polled), opens each with the group key (in the
identity process, which holds it), records it in history and hands it on, then moves
its `last_seq`. A broker that fails (no answer, its messaging process gone) is skipped for
`BROKER_BACKOFF` seconds and the next position serves; since the member names where it is in
the queue on every fetch, switching brokers neither skips nor repeats a message, and a member
that was away (left, stopped, restarted) gets what it missed, in order, on its next fetch.

Trusting no broker: every entry must carry a link signed by one of the group's brokers that
chains from the last entry this member consumed (chain.py), and a message signed by its sender
(envelope.py). A broker that serves a gap, a fork, a reordered or badly linked entry is reported
(log, `faults`, the `group-broker-faulty` event), rests for `FAULTY_BACKOFF` seconds, and the
next broker serves the same fetch. A message whose sender signature fails is dropped and
counted, and the broker that numbered it is reported too (honest brokers check it first).

Sending: the data is sealed to the group key by the identity process (a fresh AES-256-GCM key per
message, wrapped by the group's RSA public key: brokers see only ciphertext), signed with our
master key, and offered to the brokers in position order until one acknowledges it with its
sequence number and signed link. A resend after a lost answer carries the same message id, which
brokers recognise. When that number comes by with another link, the broker that acknowledged it
(or the two that signed the two links) is reported: it dropped our message from the history.

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
from services.messaging.chain import BAD_LINK, FORGED_MESSAGE, FORK, ChainError, Link, follows
from services.messaging.courier import fail_reason
from services.messaging.envelope import EnvelopeError
from services.messaging.group_store import GroupRecord, GroupStore, in_order
from services.messaging.membership import alias_of, proof_payload
from services.messaging.queue_store import Entry
from common.ids import idurl_to_global_id
from services.messaging.signatures import SignatureChecker
from services.messaging.store import DELIVERED, RECEIVED, MessageStore, StoredMessage

log = logging.getLogger(__name__)

POLL_WAIT = 8.0
"""Seconds a broker holds a fetch open when nothing is queued (also bounds failover detection)."""
FETCH_MARGIN = 6.0
PRODUCE_TIMEOUT = 12.0
SEND_DEADLINE = 45.0
BROKER_BACKOFF = 10.0
FAULTY_BACKOFF = 60.0
"""Seconds a broker caught serving a broken chain is passed over while another one answers."""
STATUS_TIMEOUT = 8.0
CROSS_CHECK_EVERY = 30.0
"""Seconds between a member's questions to a second broker about the last link it consumed."""
MAX_UNVOUCHED = 10_000
"""Entries signed only by former brokers a member holds while waiting for a current broker's link over them."""
MAX_ACKED = 1000
"""Acknowledged links a member keeps per group (its latest messages) to check against the queue."""
CHECKED_FRESH = 60.0
"""Seconds a broker's last checked answer (fetch, produce, status) counts as it being connected."""
NO_BROKERS_RETRY = 5.0
HIRE_TIMEOUT = 10.0
HIRE_RETRY = 15.0
"""Seconds between a creator's attempts to fill broker positions still empty (few brokers announced yet)."""
PERMANENT = frozenset({"not_member", "bad_certificate", "forged_sender", "too_large", "malformed"})

# A member's states, named as the reference engine's group participant names them: its clients wait
# for CONNECTED. SUPPLIERS? reads the brokers (the group's "suppliers") from the DHT, SUBSCRIBE! asks one.
AT_STARTUP, LOOKUP, SUBSCRIBE, IN_SYNC, DISCONNECTED = "AT_STARTUP", "SUPPLIERS?", "SUBSCRIBE!", "CONNECTED", \
    "DISCONNECTED"
CONNECTED, OFFLINE, REFUSED = "CONNECTED", "OFFLINE", "REFUSED"
"""What a creator's check of one of its brokers found (queue_keepers_list)."""
_FORGED = object()
"""What `_open` gives for a message its sender did not sign (dropped, and its broker reported)."""


class GroupsNet(Protocol):
    """The node as group members and creators use it (BusPeers in production)."""

    async def my_idurl(self) -> str | None: ...

    async def brokers(self, creator: str, refresh: bool = False) -> list[tuple[int, str]]: ...

    async def request(self, idurl: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    async def group_key(self, key_id: str) -> dict[str, Any]:
        """The key's `public` half and creator `signature` (raises `NotFoundError`)."""

    async def sign_with(self, key_id: str | None, data: bytes) -> str:
        """Base64 signature of `data` by a private key held by the identity process (None: the master key)."""

    async def public_key(self, idurl: str, refresh: bool = False) -> str:
        """The master public key of `idurl` (OpenSSH text); raises `NodeError` (404: nobody)."""

    async def seal(self, public_key: str, header: envelope.Header, data: dict[str, Any]) -> dict[str, Any]:
        """The payload of `data` sealed for the holder of `public_key` (OpenSSH text)."""

    async def open(self, sealed: envelope.Sealed, key_id: str | None = None) -> bytes:
        """The plaintext of a message sealed for `key_id`; raises `NodeError` (4xx: not for that key)."""

    async def random_brokers(self, count: int) -> list[str]: ...

    async def publish_broker(self, creator: str, position: int, broker: str) -> None: ...


class GroupMember(Automat):
    """One joined group: finding its brokers, connecting to the queue, following it."""

    initial = AT_STARTUP
    transitions = {
        (AT_STARTUP, "connect"): LOOKUP,
        (DISCONNECTED, "connect"): LOOKUP,
        (LOOKUP, "brokers-found"): SUBSCRIBE,
        (SUBSCRIBE, "queue-connected"): IN_SYNC,
        (SUBSCRIBE, "brokers-not-found"): LOOKUP,
        (IN_SYNC, "broker-failed"): SUBSCRIBE,
        (IN_SYNC, "brokers-not-found"): LOOKUP,
        ("*", "disconnect"): DISCONNECTED,
    }

    def __init__(self, group: str, registry: AutomatRegistry | None):
        super().__init__(f"group_member_{alias_of(group)}", registry, name="group_member")
        self.group = group
        self.active_broker = ""
        self.position: int | None = None
        self.consumers: list[str] = []
        self.producers: list[str] = []
        self.last_error = ""
        self.sequence_head: int | None = None
        """The first sequence id consumed since this machine started; `sequence_tail` the last."""
        self.sequence_tail: int | None = None
        self.sequence_count = 0

    def consumed(self, seq: int) -> None:
        """One more entry of the queue taken, in order."""
        if self.sequence_head is None:
            self.sequence_head = seq
        self.sequence_tail = seq
        self.sequence_count += 1


class Groups:
    """The groups this node is a member of, and the creator's broker hiring."""

    def __init__(self, store: GroupStore, history: MessageStore, net: GroupsNet,
                 on_new: Callable[[StoredMessage], Awaitable[bool]], registry: AutomatRegistry | None = None,
                 clock: Callable[[], float] = time.time, poll_wait: float = POLL_WAIT,
                 positions: Callable[[], int] = lambda: 2,
                 on_fault: Callable[[str, str, str], Awaitable[None]] | None = None):
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
        self.on_fault = on_fault
        self.dropped: Counter[str] = Counter()
        self.group_dropped: Counter[tuple[str, str]] = Counter()
        """(group, reason) -> messages dropped: what `group_info` shows."""
        self.faults: Counter[tuple[str, str, str]] = Counter()
        """(group, broker IDURL, reason) -> times that broker was caught serving a broken chain."""
        self.answered: dict[str, float] = {}
        """Broker IDURL -> when it last answered a request of ours with an Ack (our clock)."""
        self.failures: dict[str, tuple[str, str]] = {}
        """Broker IDURL -> (OFFLINE or REFUSED, reason) of its last failed request (cleared by an Ack)."""
        self.signatures = SignatureChecker(net.public_key)
        self.received = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._backoff: dict[str, float] = {}
        self._credentials: dict[str, tuple[dict[str, str], str, str]] = {}
        self._hiring = asyncio.Lock()
        self._consuming: dict[str, asyncio.Lock] = {}
        self.cross_check_every = CROSS_CHECK_EVERY
        self._cross_checked: dict[str, float] = {}
        self._checks: set[asyncio.Task[bool]] = set()
        self._unvouched: dict[str, list[tuple[Entry, Link, envelope.Sealed]]] = {}
        """Group -> checked entries after our position whose links only former brokers signed (so far)."""
        self._acked: dict[str, dict[int, Link]] = {}
        """Group -> seq -> the signed link a broker acknowledged one of our messages with (the latest few)."""

    # ---- life cycle ------------------------------------------------------------------------------

    def restore(self) -> None:
        """Follow again every group that was joined when the process stopped."""
        for record in self.store.all():
            if record.joined:
                self._start(record.group_key_id)

    async def close(self) -> None:
        tasks = list(self._tasks.values()) + list(self._checks)
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
            self.machine(group).fire("connect")  # so that an answered poll leaves it CONNECTED at once
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
        self._unvouched.pop(group, None)
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
        brokers = await self.net.brokers(record.creator, refresh=machine.state == LOOKUP)
        if len(brokers) < self.positions() and record.creator == await self.net.my_idurl() \
                and time.monotonic() - self._hired_at > HIRE_RETRY:
            self._hired_at = time.monotonic()
            asyncio.ensure_future(self._hire_quietly(record.creator))
        if not brokers:
            machine.fire("brokers-not-found")
            raise UnavailableError(f"no brokers of {group} in the DHT yet", reason="no_brokers")
        machine.fire("brokers-found")
        cert, proof, _ = await self.credentials(group)
        tried: set[str] = set()
        while True:
            # The best broker first; when it fails, the next one at once (a failover costs no poll).
            position, broker = self._pick([b for b in brokers if b[1] not in tried])
            tried.add(broker)
            payload = self._fetch_request(group, cert, proof, wait)
            try:
                reply = await self.net.request(broker, payload, wait + FETCH_MARGIN)
            except NodeError as err:
                self._broker_failed(machine, broker, err.reason, OFFLINE)
                if len(tried) < len(brokers):
                    continue
                raise
            if reply.get("command") == "Ack" and isinstance(reply.get("payload"), dict):
                try:
                    await self._take(group, broker, position, reply["payload"], brokers)
                    self._cross_check_later(group, broker)
                    return
                except ChainError as err:
                    for culprit in err.culprits or (broker,):
                        await self._report(group, culprit, err.reason, str(err))
                    if len(tried) < len(brokers):
                        continue
                    raise UnavailableError(f"no broker of {group} serves an intact queue: {err.reason}",
                                           reason="broker_faulty") from None
            reason = fail_reason(reply)
            self._broker_failed(machine, broker, reason, REFUSED)
            if reason in PERMANENT:
                self._credentials.pop(group, None)
            if len(tried) >= len(brokers):
                raise UnavailableError(f"broker {broker} refused: {reason}", reason="broker_refused")

    def _fetch_request(self, group: str, cert: dict[str, str], proof: str, wait: float) -> dict[str, Any]:
        """A fetch after our last consumed entry, naming its link (a broker shows a fork, or chains from it)."""
        after, link, link_hash = self._place(group)
        return request("fetch", group, cert=cert, proof=proof, after=after, wait=wait, after_hash=link_hash or "",
                       after_link=link)

    def _place(self, group: str) -> tuple[int, dict[str, Any] | None, str | None]:
        """Where we are in the queue: (seq, its link, the hash the next link names), entries kept
        while no current broker vouches for them included."""
        pending = self._unvouched.get(group)
        if pending:
            return pending[-1][0].seq, pending[-1][1].wire(), pending[-1][1].hash()
        record = self.store.get(group)
        if record is None:
            raise NotFoundError(f"group {group} was not found", reason="group_not_found")
        return record.last_seq, record.last_link, record.last_hash()

    async def _take(self, group: str, broker: str, position: int, answer: dict[str, Any],
                    brokers: list[tuple[int, str]]) -> None:
        """Consume a broker's answer; raises `ChainError` when it does not continue our chain."""
        machine = self.machine(group)
        if answer.get("fork") is not None:
            await self._check_fork(group, answer["fork"], brokers)
        await self.consume(group, answer.get("entries") or [], brokers)
        self._backoff.pop(broker, None)
        self._answered(broker)
        machine.active_broker, machine.position = broker, position
        machine.consumers = [str(c) for c in answer.get("consumers") or []]
        machine.producers = [str(p) for p in answer.get("producers") or []]
        machine.fire("queue-connected")

    async def _check_fork(self, group: str, evidence: Any, brokers: list[tuple[int, str]]) -> None:
        """A broker says it holds another link at our last place: raise the fork, naming who signed both."""
        after, link, _ = self._place(group)
        theirs = Link.from_wire(evidence)
        if not link or theirs.group != group or theirs.seq != after:
            raise ChainError(BAD_LINK, "fork evidence for another place")
        mine = Link.from_wire(link)
        if theirs.hash() == mine.hash() or not await self.signatures.link_signed(theirs, brokers):
            raise ChainError(BAD_LINK, "fork evidence that proves nothing")
        # Two links for one place, both signed by brokers of the group: whoever signed both equivocated;
        # otherwise two brokers numbered the same place and both are named.
        raise ChainError(FORK, f"two histories at entry {mine.seq}",
                         culprits=tuple(sorted({theirs.broker, mine.broker})))

    def _cross_check_later(self, group: str, serving: str) -> None:
        """Now and then, ask another broker whether it holds our last link too (in the background)."""
        if time.monotonic() - self._cross_checked.get(group, float("-inf")) < self.cross_check_every:
            return
        self._cross_checked[group] = time.monotonic()
        task = asyncio.ensure_future(self.cross_check(group, serving))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def cross_check(self, group: str, serving: str) -> bool:
        """Ask the best broker other than `serving` about our last link; False when it proved a fork.

        The broker we follow could show us a history the others do not hold (its own private
        fork): a second broker that holds another signed link at our place proves it.
        """
        record = self.store.get(group)
        if record is None or not record.last_link:
            return True
        brokers = await self.net.brokers(record.creator)
        others = [b for b in brokers if b[1] != serving]
        if not others:
            return True
        _, other = self._pick(others)
        try:
            cert, proof, _ = await self.credentials(group)
            query = request("status", group, cert=cert, proof=proof, after=record.last_seq,
                            after_hash=record.last_hash() or "")
            reply = await self.net.request(other, query, STATUS_TIMEOUT)
        except NodeError as err:
            self.failures[other] = (OFFLINE, err.reason)
            return True
        answer = reply.get("payload")
        if reply.get("command") != "Ack" or not isinstance(answer, dict):
            self.failures[other] = (REFUSED, fail_reason(reply))
            return True
        self._answered(other)
        if answer.get("fork") is None:
            return True
        try:
            await self._check_fork(group, answer["fork"], brokers)
        except ChainError as err:
            for culprit in err.culprits or (other,):
                await self._report(group, culprit, err.reason, str(err))
        return False

    async def _report(self, group: str, broker: str, reason: str, detail: str) -> None:
        """A broker caught breaking the chain: counted, logged, rested, and told to the node's listeners."""
        self.faults[(group, broker, reason)] += 1
        log.warning("broker %s of %s is faulty: %s (%s)", broker, group, reason, detail)
        self._backoff[broker] = time.monotonic() + FAULTY_BACKOFF
        machine = self.machine(group)
        machine.last_error = f"broker_{reason}"
        machine.fire("broker-failed")
        if self.on_fault is not None:
            with contextlib.suppress(Exception):
                await self.on_fault(group, broker, reason)

    def _answered(self, broker: str) -> None:
        self.answered[broker] = self.clock()
        self.failures.pop(broker, None)

    def _pick(self, brokers: list[tuple[int, str]]) -> tuple[int, str]:
        """The lowest position not resting after a failure (else the one whose rest ends first)."""
        now = time.monotonic()
        for position, broker in brokers:
            if self._backoff.get(broker, 0.0) <= now:
                return position, broker
        return min(brokers, key=lambda b: self._backoff.get(b[1], 0.0))

    def _broker_failed(self, machine: GroupMember, broker: str, reason: str, state: str) -> None:
        log.info("broker %s of %s failed: %s", broker, machine.group, reason)
        self.failures[broker] = (state, reason)
        self._backoff[broker] = time.monotonic() + BROKER_BACKOFF
        machine.last_error = reason
        machine.fire("broker-failed")

    async def consume(self, group: str, items: list[Any], brokers: list[tuple[int, str]] | None = None) -> int:
        """Check, open, record and hand on the entries after our position, in order; how many were new.

        Raises:
            ChainError: an entry does not continue our chain (the entries before it are consumed).
        """
        async with self._consuming.setdefault(group, asyncio.Lock()):
            return await self._consume(group, items, brokers)

    async def _consume(self, group: str, items: list[Any], brokers: list[tuple[int, str]] | None) -> int:
        entries = []
        for item in items:
            try:
                entries.append(Entry.from_wire(item))
            except ValueError:
                self.dropped["malformed"] += 1
        record = self.store.get(group)
        if record is None:
            return 0
        pending = self._unvouched.pop(group, [])
        last_hash: str | None
        if pending:
            last_seq, last_hash = pending[-1][0].seq, pending[-1][1].hash()
        else:
            last_seq, last_hash = record.last_seq, record.last_hash()
        fresh, replays = in_order(last_seq, entries)
        if replays:
            self.dropped["replayed"] += replays
        if brokers is None:
            brokers = await self.net.brokers(record.creator)
        # The chain first, in order: the entries up to the first one that breaks it are taken. A link
        # signed by a broker that no longer serves the group (replaced since) is taken once a later link
        # signed by a current broker chains over it: that signature covers every hash before it.
        checked: list[tuple[Entry, Link, envelope.Sealed]] = []
        vouched: list[tuple[Entry, Link, envelope.Sealed]] = pending
        fault: ChainError | None = None
        for entry in fresh:
            try:
                link, sealed, current = await self._check_link(group, entry, last_seq, last_hash, brokers,
                                                               record.creator)
            except ChainError as err:
                fault = err
                break
            vouched.append((entry, link, sealed))
            if current:
                checked += vouched
                vouched = []
            last_seq, last_hash = entry.seq, link.hash()
        if fault is None and vouched:
            if len(vouched) > MAX_UNVOUCHED:
                fault = ChainError(BAD_LINK, f"{len(vouched)} entries that no current broker signed over")
            else:  # kept, and fetched after: the next link a current broker signs vouches for them
                self._unvouched[group] = vouched
        for entry, link, _ in checked:
            acked = self._acked.get(group, {}).pop(entry.seq, None)
            if acked is not None and acked.hash() != link.hash():
                # A broker acknowledged our message at this number, and the history holds another one.
                for culprit in sorted({acked.broker, link.broker}):
                    await self._report(group, culprit, FORK, f"our message {acked.message_id} was acknowledged at "
                                                             f"{entry.seq}, the queue holds {entry.message_id} there")
        opened = await asyncio.gather(*(self._open(group, e, sealed) for e, _, sealed in checked),
                                      return_exceptions=True)
        new = 0
        for (entry, link, _), result in zip(checked, opened, strict=True):
            if isinstance(result, BaseException):
                raise result  # the identity process is away: stop here, this entry is fetched again
            if result is _FORGED:
                await self._report(group, link.broker, FORGED_MESSAGE, f"entry {entry.seq} is not signed by its sender")
            elif isinstance(result, StoredMessage) and self.history.add(result):
                self.received += 1
                new += 1
                await self.on_new(result)
            self.store.advance(group, entry.seq, link.wire())
            self.machine(group).consumed(entry.seq)
        if fault is not None:
            raise fault
        return new

    async def _check_link(self, group: str, entry: Entry, last_seq: int, last_hash: str | None,
                          brokers: list[tuple[int, str]], creator: str) -> tuple[Link, envelope.Sealed, bool]:
        """The entry's link and sealed message when it continues our chain, and whether a current broker
        signed the link (False: its signer serves the group no more); raises `ChainError`."""
        if entry.link is None:
            raise ChainError(BAD_LINK, f"entry {entry.seq} has no link")
        link = Link.from_wire(entry.link)
        try:
            sealed = envelope.parse(entry.sealed)
        except EnvelopeError:
            raise ChainError(BAD_LINK, f"entry {entry.seq} holds no sealed message") from None
        follows(link, group, entry.seq, entry.message_id, entry.sender, sealed.digest(), last_seq, last_hash)
        if link.broker not in [b for _, b in brokers]:
            brokers = await self.net.brokers(creator, refresh=True)
            if link.broker not in [b for _, b in brokers]:
                return link, sealed, False
        if not await self.signatures.link_signed(link, brokers):
            raise ChainError(BAD_LINK, f"the link of entry {entry.seq} is not signed by its broker")
        return link, sealed, True

    async def _open(self, group: str, entry: Entry, sealed: envelope.Sealed) -> StoredMessage | object | None:
        """The message of a checked entry; `_FORGED` when its sender did not sign it, None when dropped."""
        try:
            header = sealed.header
            if header.msg_type != "group_message" or header.recipient != group \
                    or header.sender != entry.sender or header.message_id != entry.message_id:
                raise EnvelopeError("forged_sender", "the entry does not match its sealed header")
            if not await self.signatures.valid(header.sender, sealed.signed_bytes(), sealed.signature):
                raise EnvelopeError("bad_signature", "the message is not signed by its sender")
            try:
                plain = await self.net.open(sealed, group)
            except NodeError as err:
                if err.status >= 500:
                    raise
                raise EnvelopeError("undecryptable", "the message was not sealed for the group key") from None
            data = envelope.decode_body(plain)
        except EnvelopeError as err:
            self.dropped[err.reason] += 1
            self.group_dropped[(group, err.reason)] += 1
            log.warning("group message %s/%d dropped: %s", group, entry.seq, err.reason)
            return _FORGED if err.reason in ("bad_signature", "forged_sender") else None
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
        sealed["signature"] = await self.net.sign_with(None, envelope.parse(sealed).signed_bytes())
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
                    self._broker_failed(machine, broker, err.reason, OFFLINE)
                    continue
                answer = reply.get("payload")
                if reply.get("command") == "Ack" and isinstance(answer, dict):
                    self._answered(broker)
                    await self._remember_ack(group, header.message_id, answer.get("link"), brokers)
                    return {"group_key_id": group, "message_id": header.message_id, "sequence_id": answer.get("seq"),
                            "broker_id": broker, "position": position, "duplicate": bool(answer.get("duplicate"))}
                reason = fail_reason(reply)
                errors.append(reason)
                if reason in PERMANENT:
                    self._credentials.pop(group, None)
                    raise ConflictError(f"broker refused the message: {reason}", reason=f"group_{reason}")
                self._broker_failed(machine, broker, reason, REFUSED)
            if time.monotonic() > deadline:
                raise UnavailableError(f"no broker of {group} took the message: {', '.join(errors[-3:]) or 'none'}",
                                       reason="broker_unavailable")
            await asyncio.sleep(1.0)

    async def _remember_ack(self, group: str, message_id: str, doc: Any, brokers: list[tuple[int, str]]) -> None:
        """Keep the signed link a broker acknowledged our message with, to hold it to that number."""
        try:
            link = Link.from_wire(doc)
        except ChainError:
            return
        if link.group != group or link.message_id != message_id or not await self.signatures.link_signed(link, brokers):
            return
        acked = self._acked.setdefault(group, {})
        acked[link.seq] = link
        while len(acked) > MAX_ACKED:
            acked.pop(min(acked))

    # ---- what is known of the brokers ------------------------------------------------------------

    async def check_brokers(self, creator: str, group: str) -> list[dict[str, Any]]:
        """The creator's brokers, each with what was checked: a recent Ack, else a `status` query now."""
        brokers = await self.net.brokers(creator)
        try:
            cert, proof, _ = await self.credentials(group)
        except NodeError:
            cert, proof = {}, ""

        async def check(position: int, broker: str) -> dict[str, Any]:
            if self.clock() - self.answered.get(broker, float("-inf")) > CHECKED_FRESH:
                try:
                    reply = await self.net.request(broker, request("status", group, cert=cert, proof=proof),
                                                   STATUS_TIMEOUT)
                except NodeError as err:
                    self.failures[broker] = (OFFLINE, err.reason)
                else:
                    if reply.get("command") == "Ack":
                        self._answered(broker)
                    else:
                        self.failures[broker] = (REFUSED, fail_reason(reply))
            fresh = self.clock() - self.answered.get(broker, float("-inf")) <= CHECKED_FRESH
            state, error = self.failures.get(broker, (CONNECTED if fresh else OFFLINE, ""))
            return {"position": position, "broker_id": idurl_to_global_id(broker), "idurl": broker, "state": state,
                    "last_answer": self.answered.get(broker), "last_error": error,
                    "faults": sum(n for (g, b, _), n in self.faults.items() if b == broker and g == group)}

        return list(await asyncio.gather(*(check(p, b) for p, b in brokers)))

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
                    self._answered(candidate)
                    await self.net.publish_broker(creator, position, candidate)
                    log.info("broker %s hired at position %d", candidate, position)
                    break
            return await self.net.brokers(creator, refresh=True)
