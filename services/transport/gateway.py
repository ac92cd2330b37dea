"""The packet gateway: signs what goes out, checks what comes in, matches replies, tracks presence.

Domain code with no bus in it: the identity process and the inbox consumers are reached through
the `IdentityDirectory` and `InboxDispatcher` protocols, network links through `Transport`s.

Every arriving packet is decoded, addressed-to-us checked, date checked, signature checked
(public key from the sender's identity, refetched once in case the key rotated) and replay
checked before anything else looks at it; a refused packet is counted and logged, and only
that packet is lost.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

from common import codec, crypto
from common import packet as packets
from common.automat import AutomatRegistry
from common.errors import ConflictError, DeadlineError, NodeError, NotFoundError, UnavailableError
from common.packet import Packet, PacketError
from common.ids import idurl_to_global_id
from services.transport.presence import PresenceBook, PresenceObserver
from services.transport.protocol import Buffer, Link, PeerUnreachableError, Transport
from services.transport.replay import ReplayCache
from services.transport.stats import PacketStats

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

log = logging.getLogger(__name__)

HASH_OFF_LOOP_ABOVE = 512 * 1024
"""Payloads at least this large are hashed in a worker thread (hashlib releases the GIL)."""


MIN_REFRESH_INTERVAL = 10.0
"""Seconds between refetches of one peer's identity after a signature failed to verify."""


class IdentityDirectory(Protocol):
    """The identity process, as the gateway uses it."""

    async def my_identity(self) -> dict[str, Any]: ...

    async def sign(self, data: bytes) -> bytes: ...

    async def fetch(self, idurl: str, refresh: bool = False) -> dict[str, Any]: ...


class InboxDispatcher(Protocol):
    """Hands a verified request packet to the process that owns its command; returns its reply
    document (see `reply_fields`).

    Raises `UnavailableError` when nobody handles the command, `DeadlineError` on timeout.
    """

    async def deliver(self, pkt: Packet, timeout: float) -> dict[str, Any]: ...


MAX_PEER_KEYS = 10_000
"""Peers' identities and public keys cached by the gateway."""


@dataclass(frozen=True)
class GatewayOptions:
    """Timeouts and limits of packet handling."""

    inbox_timeout: float = 60.0
    reply_timeout: float = 30.0
    max_clock_skew: float = packets.MAX_CLOCK_SKEW
    key_cache_ttl: float = 300.0
    max_deliveries_per_link: int = 16
    """Requests of one link handed to local processes at once; the link reads no further meanwhile,
    so a fast sender fills its own read queue and then the socket (backpressure), not our memory."""


@dataclass
class _Tracked:
    """A packet in flight, for `packets_list`."""

    packet: Packet
    direction: str
    size: int
    started: float
    timeout: float | None
    target: str
    proto: str = ""
    host: str = ""
    future: asyncio.Future[Packet] | None = field(default=None, repr=False)

    def info(self) -> dict[str, Any]:
        pkt = self.packet
        short = pkt.packet_id.rsplit(":", 1)[-1]
        peer = idurl_to_global_id(self.target).split("@", 1)[0]
        return {
            "command": pkt.command,
            "packet_id": pkt.packet_id,
            "description": f"{pkt.command}({pkt.packet_id})",
            "direction": self.direction,
            "label": f"{'out' if self.direction == 'outgoing' else 'in'}_{short}_{peer}",
            "target": self.target,
            "response_timeout": self.timeout,
            "started": self.started,
            "items": [{"proto": self.proto, "host": self.host, "size": self.size,
                       "bytes_sent": self.size if self.proto else 0, "transfer_id": None}],
        }


class Gateway:
    """Sends signed packets, receives and verifies them, and keeps presence and counters."""

    def __init__(self, directory: IdentityDirectory, inbox: InboxDispatcher,
                 automats: AutomatRegistry | None = None, on_presence: PresenceObserver | None = None,
                 options: GatewayOptions | None = None, clock: Callable[[], float] = time.time):
        self.directory = directory
        self.inbox = inbox
        self.options = options or GatewayOptions()
        self.clock = clock
        self.transports: list[Transport] = []
        self.presence = PresenceBook(automats, on_presence)
        self.stats = PacketStats()
        self.replay = ReplayCache(window=2 * self.options.max_clock_skew)
        self.me: dict[str, Any] | None = None
        self._keys: dict[str, tuple[float, RSAPublicKey, dict[str, Any]]] = {}
        self._outgoing: dict[tuple[str, str], _Tracked] = {}
        self._incoming: dict[int, _Tracked] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._link_slots: weakref.WeakKeyDictionary[Link, asyncio.Semaphore] = weakref.WeakKeyDictionary()
        self.on_self_connection: Callable[[], None] | None = None
        """Called when a dialer claims our own identity: another node may have taken it over."""

    # ---- identity --------------------------------------------------------------------------

    async def load_identity(self) -> dict[str, Any]:
        """Ask the identity process for ours. Raises `NotFoundError` / `UnavailableError`."""
        self.me = await self.directory.my_identity()
        return self.me

    def local_idurl(self) -> str | None:
        return str(self.me["idurl"]) if self.me else None

    def is_me(self, idurl: str) -> bool:
        """Our IDURL or an earlier one: peers that knew us before a rotation still reach us."""
        me = self.me
        return me is not None and (idurl == me.get("idurl") or idurl in (me.get("sources") or ()))

    async def moved(self, expected: str, actual: str) -> bool:
        try:
            doc = await self.peer_identity(actual, refresh=True)
        except NodeError:
            return False
        return expected in (doc.get("sources") or ())

    def _require_identity(self) -> dict[str, Any]:
        if not self.me:
            raise ConflictError("this node has no identity yet: packets cannot be signed",
                                reason="identity_not_exist")
        return self.me

    async def peer_identity(self, idurl: str, refresh: bool = False) -> dict[str, Any]:
        """A peer's identity (cached). Raises `NotFoundError` when the peer is unknown."""
        cached = self._keys.get(idurl)
        if cached and not refresh and time.monotonic() - cached[0] < self.options.key_cache_ttl:
            return cached[2]
        doc = await self.directory.fetch(idurl, refresh=refresh)
        try:
            key = crypto.load_public_key(str(doc.get("publickey") or ""))
        except crypto.CryptoError:
            raise NotFoundError(f"identity of {idurl} has no valid public key", reason="identity_invalid") from None
        self._keys.pop(idurl, None)
        self._keys[idurl] = (time.monotonic(), key, doc)
        while len(self._keys) > MAX_PEER_KEYS:
            del self._keys[next(iter(self._keys))]  # the least recently fetched
        return doc

    async def _public_key(self, idurl: str, refresh: bool) -> RSAPublicKey:
        await self.peer_identity(idurl, refresh=refresh)
        return self._keys[idurl][1]

    # ---- credentials for transports ------------------------------------------------------------

    async def sign(self, digest: bytes) -> bytes:
        return await self.directory.sign(digest)

    async def verify(self, idurl: str, digest: bytes, signature: bytes) -> bool:
        """Check `signature` by `idurl`'s key; refetch the identity once if it fails (rotation)."""
        for refresh in (False, True):
            cached = self._keys.get(idurl)
            if refresh and cached and time.monotonic() - cached[0] < MIN_REFRESH_INTERVAL:
                break  # just fetched: a refetch cannot help, and floods must not hammer the identity process
            try:
                key = await self._public_key(idurl, refresh)
            except NodeError:
                return False
            if crypto.verify(key, digest, signature):
                return True
        return False

    async def contacts(self, idurl: str) -> list[str]:
        return [str(c) for c in (await self.peer_identity(idurl)).get("contacts") or []]

    # ---- outgoing ---------------------------------------------------------------------------

    async def send(self, remote_idurl: str, command: str, payload: Buffer, *, binary: bool = False,
                   timeout: float | None = None, packet_id: str | None = None,
                   wait_reply: bool = True, payload_sha256: bytes | None = None) -> Packet | None:
        """Sign and send one packet; with `wait_reply`, return the reply packet (its `payload_sha256` set).

        `payload_sha256` is the payload's SHA-256 when the caller already has it (trusted, not rechecked).

        Raises:
            ConflictError: no local identity (reason `identity_not_exist`), or the packet id is in use.
            NotFoundError: the remote identity is unknown.
            UnavailableError: the peer cannot be reached (reason `peer_offline`).
            DeadlineError: no reply in `timeout` seconds.
        """
        me = self._require_identity()
        timeout = self.options.reply_timeout if timeout is None else float(timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        contacts = await self.contacts(remote_idurl)
        key_id = f"master${me.get('global_id') or idurl_to_global_id(str(me['idurl']))}"
        try:
            unsigned = packets.create(command, str(me["idurl"]), remote_idurl, payload, binary=binary,
                                      key_id=key_id, packet_id=packet_id)
        except PacketError as err:
            raise ConflictError(str(err), reason=err.reason) from None
        unsigned = unsigned.hashed(payload_sha256 or await payload_hash(unsigned.payload))
        pkt = unsigned.signed(await self.sign(packets.signing_digest(unsigned, unsigned.payload_sha256)))
        parts = packets.encode(pkt)
        tracked = _Tracked(pkt, "outgoing", packets.encoded_size(parts), self.clock(),
                           timeout if wait_reply else None, remote_idurl)
        key = (remote_idurl, pkt.packet_id)
        if wait_reply:
            if key in self._outgoing:
                raise ConflictError(f"packet {pkt.packet_id} is already waiting for a reply", reason="packet_id_in_use")
            tracked.future = loop.create_future()
            self._outgoing[key] = tracked
        try:
            try:
                await self._transmit(pkt, contacts, parts, tracked, deadline - loop.time())
            except UnavailableError:
                # The peer may have moved (a new address, another relay): follow its newest identity.
                fresh = await self._newer_contacts(remote_idurl, contacts)
                if not fresh:
                    raise
                await self._transmit(pkt, fresh, parts, tracked, deadline - loop.time())
            if tracked.future is None:
                return None
            try:
                return await asyncio.wait_for(tracked.future, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                self.stats.send_failed("timeout", pkt.command)
                self.presence.fire(remote_idurl, "ack-timeout")
                raise DeadlineError(f"no reply to {pkt.command}({pkt.packet_id}) in {timeout:g}s",
                                    reason="timeout") from None
        finally:
            if wait_reply and self._outgoing.get(key) is tracked:
                del self._outgoing[key]

    async def _newer_contacts(self, idurl: str, contacts: list[str]) -> list[str] | None:
        """The peer's contacts from a refetched identity, if they differ (at most every few seconds)."""
        cached = self._keys.get(idurl)
        if cached and time.monotonic() - cached[0] < MIN_REFRESH_INTERVAL:
            return None
        try:
            doc = await self.peer_identity(idurl, refresh=True)
        except NodeError:
            return None
        fresh = [str(c) for c in doc.get("contacts") or []]
        return fresh if fresh != contacts else None

    async def _transmit(self, pkt: Packet, contacts: list[str], parts: list[Buffer], tracked: _Tracked,
                        budget: float) -> None:
        remote = pkt.remote_idurl
        self.presence.fire(remote, "outbox-packet")
        errors = []
        for transport in self.transports:
            # A link the peer opened to us carries our packets too (a NATed peer cannot be dialled).
            if not transport.connected(remote) and not any(transport.accepts(contact) for contact in contacts):
                continue
            try:
                link = await asyncio.wait_for(transport.send(remote, contacts, parts), max(0.01, budget))
            except (PeerUnreachableError, asyncio.TimeoutError) as err:
                errors.append(f"{transport.proto}: {err or 'timeout'}")
                continue
            tracked.proto, tracked.host = link.proto, link.host
            self.stats.sent(remote, tracked.size, pkt.command)
            return
        self.stats.send_failed("peer_offline", pkt.command)
        self.presence.fire(remote, "sent-failed")
        detail = "; ".join(errors) or "no usable contact"
        raise UnavailableError(f"{idurl_to_global_id(remote)} is not reachable ({detail})", reason="peer_offline")

    # ---- incoming -----------------------------------------------------------------------------

    async def on_packet(self, link: Link, frame: bytearray) -> None:
        """Verify one arriving packet and route it: a reply, a ping, or a request for the inbox."""
        size = len(frame)
        try:
            pkt = await self._admit(frame)
        except PacketError as err:
            known = err.reason not in ("unknown_sender", "malformed", "unknown_command")
            self.stats.dropped(err.reason, size, known_sender=known)
            log.warning("packet from %s on %s dropped: %s", link.peer_idurl or link.host, link.proto, err.reason)
            return
        self.stats.received(pkt.creator_idurl, size, pkt.command)
        self.presence.fire(pkt.creator_idurl, "inbox-packet")
        waiting = self._waiting_for(pkt)
        if waiting is not None and waiting.future is not None and not waiting.future.done():
            waiting.future.set_result(pkt)
            return
        if pkt.command in packets.REPLY_COMMANDS:
            log.debug("late or unexpected %s from %s", pkt.summary(), pkt.creator_idurl)
            return
        if pkt.command == "Identity":
            self._spawn(self._reply(pkt, ReplyPayload("Ack", codec.dumps("ok"), False)))
            return
        slots = self._link_slots.get(link)
        if slots is None:
            slots = self._link_slots[link] = asyncio.Semaphore(self.options.max_deliveries_per_link)
        await slots.acquire()
        self._spawn(self._deliver(pkt, link, size, slots))

    def _waiting_for(self, pkt: Packet) -> _Tracked | None:
        """The send this packet answers, also when we addressed the sender by an earlier IDURL."""
        waiting = self._outgoing.get((pkt.creator_idurl, pkt.packet_id))
        cached = self._keys.get(pkt.creator_idurl)
        if waiting is None and cached is not None:
            for source in cached[2].get("sources") or ():
                waiting = self._outgoing.get((str(source), pkt.packet_id))
                if waiting is not None:
                    break
        return waiting

    async def _admit(self, frame: bytearray) -> Packet:
        pkt = packets.decode(frame)
        if not self.is_me(pkt.remote_idurl):
            raise PacketError("wrong_recipient")
        packets.check_fresh(pkt, self.clock(), self.options.max_clock_skew)
        try:
            await self.peer_identity(pkt.creator_idurl)
        except NodeError:
            raise PacketError("unknown_sender") from None
        # Hashed once here; the hash travels on with the packet (to the inbox, or to the sender's caller).
        pkt = pkt.hashed(await payload_hash(pkt.payload))
        digest = packets.signing_digest(pkt, pkt.payload_sha256)
        if not await self.verify(pkt.creator_idurl, digest, pkt.signature):
            raise PacketError("bad_signature")
        if not self.replay.admit(pkt.creator_idurl, digest):
            raise PacketError("replayed")
        return pkt

    async def _deliver(self, pkt: Packet, link: Link, size: int, slots: asyncio.Semaphore) -> None:
        tracked = _Tracked(pkt, "incoming", size, self.clock(), self.options.inbox_timeout, pkt.creator_idurl,
                           link.proto, link.host)
        self._incoming[id(tracked)] = tracked
        try:
            try:
                reply = reply_fields(await self.inbox.deliver(pkt, self.options.inbox_timeout))
            except UnavailableError:
                reply = _fail("no handler")
            except DeadlineError:
                reply = _fail("handler timeout")
            except NodeError as err:
                reply = _fail(err.message)
        finally:
            self._incoming.pop(id(tracked), None)
            slots.release()
        await self._reply(pkt, reply)

    async def _reply(self, request: Packet, reply: ReplyPayload) -> None:
        try:
            await self.send(request.creator_idurl, reply.command, reply.payload, binary=reply.binary,
                            packet_id=request.packet_id, wait_reply=False, timeout=self.options.reply_timeout,
                            payload_sha256=reply.payload_sha256)
        except NodeError as err:
            log.info("reply %s to %s not sent: %s", reply.command, request.summary(), err.reason)

    # ---- links --------------------------------------------------------------------------------

    def on_link_up(self, link: Link) -> None:
        self.presence.fire(link.peer_idurl, "link-up")

    def on_link_down(self, link: Link) -> None:
        self.presence.fire(link.peer_idurl, "connection-lost")

    def on_link_rejected(self, proto: str, host: str, reason: str, size: int = 0) -> None:
        self.stats.dropped(reason, size, known_sender=False)
        if reason == "handshake_self_connection" and self.on_self_connection is not None:
            self.on_self_connection()

    # ---- views and life cycle ------------------------------------------------------------------

    def connected(self, idurl: str) -> bool:
        return any(t.connected(idurl) for t in self.transports)

    def packets_in_flight(self) -> list[dict[str, Any]]:
        items = list(self._outgoing.values()) + list(self._incoming.values())
        return [t.info() for t in sorted(items, key=lambda t: t.started)]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for tracked in self._outgoing.values():
            if tracked.future is not None and not tracked.future.done():
                tracked.future.cancel()
        for task in list(self._tasks):
            task.cancel()
        for transport in self.transports:
            await transport.stop()


async def payload_hash(payload: Buffer) -> bytes:
    """`packets.payload_digest`, in a worker thread for large payloads."""
    if len(payload) >= HASH_OFF_LOOP_ABOVE:
        return await asyncio.to_thread(packets.payload_digest, payload)
    return packets.payload_digest(payload)


def inbox_body(pkt: Packet, with_payload: bool = True) -> dict[str, Any]:
    """The JSON document an inbox consumer receives for a request packet."""
    body: dict[str, Any] = {"command": pkt.command, "owner_idurl": pkt.owner_idurl,
                            "creator_idurl": pkt.creator_idurl, "packet_id": pkt.packet_id,
                            "key_id": pkt.key_id, "date": pkt.date}
    if with_payload:
        body.update(payload_fields(pkt))
    return body


def payload_fields(pkt: Packet) -> dict[str, Any]:
    """`{"payload": value}` for JSON payloads, `{"payload_b64": text}` for binary ones."""
    if pkt.binary:
        return {"payload_b64": base64.b64encode(pkt.payload).decode()}
    try:
        return {"payload": codec.loads(pkt.payload) if len(pkt.payload) else None}
    except ValueError:
        return {"payload_b64": base64.b64encode(pkt.payload).decode()}


class ReplyPayload(NamedTuple):
    """What a reply packet carries: command, payload bytes, binary flag, and the payload's hash if known."""

    command: str
    payload: Buffer
    binary: bool
    payload_sha256: bytes | None = None


def _fail(message: str) -> ReplyPayload:
    return ReplyPayload("Fail", codec.dumps(message), False)


def reply_document(reply: dict[str, Any]) -> dict[str, Any]:
    """An inbox consumer's reply with a bus endpoint's `{"result": …}` wrapper taken off."""
    if "command" not in reply and "error" not in reply and isinstance(reply.get("result"), dict):
        return dict(reply["result"])
    return reply


def reply_fields(reply: dict[str, Any]) -> ReplyPayload:
    """The reply packet an inbox consumer's reply document asks for.

    Forms: `{"command", "payload": <JSON>}`, `{"command", "payload_b64": text}`, and (from the bus edge,
    which reads `payload_path` files and binary bus replies into it) `{"command", "payload_raw": bytes}`
    with an optional `"payload_sha256"` (hex) that is trusted; `{"error": …}` becomes a Fail.
    """
    if "error" in reply and "command" not in reply:
        err = reply.get("error") or {}
        return _fail(str(err.get("message") or "error") if isinstance(err, dict) else str(err))
    reply = reply_document(reply)
    command = str(reply.get("command") or "Ack")
    if command not in packets.COMMANDS:
        return _fail(f"handler replied with unknown command {command[:40]}")
    if isinstance(reply.get("payload_raw"), (bytes, bytearray, memoryview)):
        try:
            digest = parse_sha256(reply.get("payload_sha256"))
        except ValueError:
            return _fail("handler replied with malformed payload_sha256")
        return ReplyPayload(command, reply["payload_raw"], True, digest)
    if reply.get("payload_b64") is not None:
        try:
            return ReplyPayload(command, crypto.unb64(str(reply["payload_b64"])), True)
        except crypto.CryptoError:
            return _fail("handler replied with malformed payload_b64")
    return ReplyPayload(command, codec.dumps(reply.get("payload")), False)


def parse_sha256(text: Any) -> bytes | None:
    """32 bytes from 64 hex digits, None for None; raises `ValueError` for anything else."""
    if text is None:
        return None
    if not isinstance(text, str) or len(text) != 64:
        raise ValueError("payload_sha256 must be 64 hex digits")
    return bytes.fromhex(text)
