"""The TCP transport: authenticated, length-framed, persistent connections, one reused per peer.

Receiving goes through `asyncio.BufferedProtocol`, so each frame body lands once in a buffer
of its final size; sending writes the frame header and the packet parts separately, so a large
payload is never joined into a new buffer. Writes are serialised per link (frames never
interleave) and respect the socket's flow control. A lost link to a peer we talked with is
re-dialed with exponential backoff for a while.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from common.automat import AutomatRegistry
from services.transport import handshake as hs
from services.transport import relay
from services.transport.connection import ConnectionMachine
from services.transport.framing import DEFAULT_MAX_FRAME, HEADER, FrameDecoder, FrameError, FrameKind, frame_header
from common.ids import idurl_to_global_id, parse_tcp_contact
from services.transport.protocol import Buffer, Credentials, LinkEvents, PeerUnreachableError

if TYPE_CHECKING:
    from services.transport.relay import RelayClient, RelayServer

log = logging.getLogger(__name__)

STREAM_THRESHOLD = 256 * 1024
"""Frames at least this large show up in `streams_list` while they move."""
HANDSHAKE_MAX_FRAME = 16 * 1024
"""The largest frame before the handshake completes (a HELLO or AUTH is far smaller)."""
MAX_MOVED = 10_000
"""Rotated peers remembered by earlier IDURL (cleared when full)."""


@dataclass(frozen=True)
class TcpOptions:
    """Where to listen and the explicit limits and timeouts of the TCP transport."""

    host: str = "127.0.0.1"
    port: int = 7771
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    max_frame: int = DEFAULT_MAX_FRAME
    reconnect_min: float = 0.25
    reconnect_max: float = 10.0
    reconnect_window: float = 600.0
    read_queue_limit: int = 64 * 1024 * 1024
    max_links: int = 1024
    """Connections open at once, both directions; incoming ones beyond it are closed at once."""
    max_handshakes: int = 128
    """Incoming connections that have not proved their identity yet, in total."""
    max_handshakes_per_host: int = 32
    """The same, from one IP address (a loopback network's nodes all share 127.0.0.1)."""


class TcpLink(asyncio.BufferedProtocol):
    """One TCP connection: framing, handshake, serialised writes, in-order packet hand-over."""

    proto = "tcp"
    _ids = itertools.count(1)

    def __init__(self, owner: "TcpTransport", direction: str, expected_idurl: str = ""):
        self.owner = owner
        self.direction = direction
        self.expected_idurl = expected_idurl
        self.peer_idurl = ""
        self.host = ""
        self.link_id = next(self._ids)
        self.bytes_in = 0
        self.bytes_out = 0
        self.created = time.time()
        self.machine = ConnectionMachine(f"tcp_connection_{self.link_id}", owner.automats, name="tcp_connection")
        # Until the handshake succeeds a peer gets handshake-sized frames only: nothing large is
        # allocated for someone who has proved nothing.
        self._decoder = FrameDecoder(HANDSHAKE_MAX_FRAME)
        self._transport: asyncio.Transport | None = None
        self._handshake_frames: asyncio.Queue[tuple[FrameKind, bytearray] | None] = asyncio.Queue()
        self._ready_seen = False
        self._established = asyncio.Event()
        self._closed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._inbound: deque[tuple[FrameKind, bytearray]] = deque()
        self._inbound_bytes = 0
        self._inbound_ready = asyncio.Event()
        self._reading_paused = False
        self._sending: tuple[int, float] | None = None

    # ---- asyncio protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the methods of `asyncio.Transport` without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.host = f"{peer[0]}:{peer[1]}"
        self.machine.fire("connection-made")
        self.owner._attach(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_in += nbytes
        try:
            frame = self._decoder.advance(nbytes)
        except FrameError as err:
            self._reject(err.reason)
            return
        if frame is not None:
            self._on_frame(*frame)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.machine.fire("connection-lost")
        self._closed.set()
        self._can_write.set()
        self._inbound_ready.set()
        self._handshake_frames.put_nowait(None)
        self.owner._detach(self)
        self.machine.close()

    # ---- frames ------------------------------------------------------------------------------

    def _on_frame(self, kind: FrameKind, body: bytearray) -> None:
        queued = kind == FrameKind.PACKET or (kind == FrameKind.RELAY and self._established.is_set())
        if queued and (self._established.is_set() or self._ready_seen):
            self._inbound.append((kind, body))
            self._inbound_bytes += len(body)
            self._inbound_ready.set()
            over_limit = self._inbound_bytes > self.owner.options.read_queue_limit
            if over_limit and self._transport and not self._reading_paused:
                self._reading_paused = True
                self._transport.pause_reading()
            return
        if kind == FrameKind.CLOSE:
            self.close()
            return
        if kind in (FrameKind.ROUTE, FrameKind.ROUTED) and self._established.is_set():
            self.owner._relay_control(self, kind, body)
            return
        if self._established.is_set() or kind == FrameKind.PACKET or self._handshake_frames.qsize() > 2:
            self._reject("protocol_violation", len(body))
            return
        if kind == FrameKind.READY:
            self._ready_seen = True
        self._handshake_frames.put_nowait((kind, body))

    def _reject(self, reason: str, size: int = 0) -> None:
        log.warning("tcp connection %s from %s dropped: %s", self.link_id, self.host, reason)
        self.owner.events.on_link_rejected(self.proto, self.host, f"frame_{reason}", size)
        self.abort()

    async def _next_handshake_frame(self, expected: FrameKind) -> bytearray:
        item = await self._handshake_frames.get()
        if item is None:
            raise hs.HandshakeError("connection_lost")
        kind, body = item
        if kind != expected:
            raise hs.HandshakeError("unexpected_frame", kind.name)
        return body

    async def send_frame(self, kind: FrameKind, parts: list[Buffer]) -> None:
        """Write one frame; waits for the socket to drain. Raises `ConnectionError` if closed."""
        total = sum(len(part) for part in parts)
        async with self._write_lock:
            if self._transport is None or self._closed.is_set() or self._transport.is_closing():
                raise ConnectionError("connection closed")
            self._transport.write(frame_header(kind, total))
            for part in parts:
                if len(part):
                    self._transport.write(part)
            self.bytes_out += HEADER.size + total
            if total >= STREAM_THRESHOLD:
                self._sending = (total, time.time())
            try:
                while not self._can_write.is_set():
                    await self._can_write.wait()
            finally:
                self._sending = None
            if self._closed.is_set():
                raise ConnectionError("connection closed while sending")

    # ---- handshake -----------------------------------------------------------------------------

    async def dial_handshake(self) -> None:
        """Prove ourselves to the listener first, then check its proof that it is `expected_idurl`."""
        creds = self.owner.credentials
        me = creds.local_idurl()
        if not me:
            raise hs.HandshakeError("no_identity")
        nonce = hs.new_nonce()
        await self.send_frame(FrameKind.HELLO, [hs.encode_hello(me, nonce, to=self.expected_idurl)])
        hello = hs.decode_hello(await self._next_handshake_frame(FrameKind.HELLO))
        if hello.idurl != self.expected_idurl and not await creds.moved(self.expected_idurl, hello.idurl):
            raise hs.HandshakeError("wrong_peer", hello.idurl)
        signature = await creds.sign(hs.transcript(me, hello.idurl, nonce, hello.nonce))
        await self.send_frame(FrameKind.AUTH, [hs.encode_auth(signature)])
        their_signature = hs.decode_ready(await self._next_handshake_frame(FrameKind.READY))
        if not await creds.verify(hello.idurl, hs.transcript(hello.idurl, me, hello.nonce, nonce), their_signature):
            raise hs.HandshakeError("bad_signature")
        self._become_established(hello.idurl)

    async def accept_handshake(self) -> None:
        """Check the dialer's proof, then prove ourselves to it.

        The dialer signs first: a stranger gets a nonce, not a signature, so opening connections
        costs it an RSA signature each before this node spends one (and one verify is cheap).
        """
        creds = self.owner.credentials
        hello = hs.decode_hello(await self._next_handshake_frame(FrameKind.HELLO))
        me = creds.local_idurl()
        if not me:
            raise hs.HandshakeError("no_identity")
        if hello.to and not creds.is_me(hello.to):
            raise hs.HandshakeError("wrong_node", hello.to)
        if creds.is_me(hello.idurl):
            raise hs.HandshakeError("self_connection")
        nonce = hs.new_nonce()
        await self.send_frame(FrameKind.HELLO, [hs.encode_hello(me, nonce)])
        their_signature = hs.decode_auth(await self._next_handshake_frame(FrameKind.AUTH))
        if not await creds.verify(hello.idurl, hs.transcript(hello.idurl, me, hello.nonce, nonce), their_signature):
            raise hs.HandshakeError("bad_signature")
        signature = await creds.sign(hs.transcript(me, hello.idurl, nonce, hello.nonce))
        self._become_established(hello.idurl)
        await self.send_frame(FrameKind.READY, [hs.encode_ready(signature)])

    def _become_established(self, idurl: str) -> None:
        self.peer_idurl = idurl
        self._decoder.max_frame = self.owner.options.max_frame
        self._established.set()
        self.machine.fire("authenticated")
        self.owner._spawn(self._consume())
        self.owner._established(self)

    async def _consume(self) -> None:
        """Hand packets to the gateway in arrival order, one at a time."""
        while True:
            while not self._inbound:
                if self._closed.is_set():
                    return
                self._inbound_ready.clear()
                await self._inbound_ready.wait()
            kind, body = self._inbound.popleft()
            self._inbound_bytes -= len(body)
            if self._reading_paused and self._inbound_bytes < self.owner.options.read_queue_limit // 2:
                self._reading_paused = False
                if self._transport and not self._transport.is_closing():
                    self._transport.resume_reading()
            try:
                if kind == FrameKind.RELAY:
                    await self.owner._relay_frame(self, body)
                else:
                    await self.owner.events.on_packet(self, body)
            except Exception:  # noqa: BLE001 - one bad packet must not stop the link
                log.exception("handling a packet from %s failed", self.peer_idurl)

    # ---- state -----------------------------------------------------------------------------------

    @property
    def is_established(self) -> bool:
        return self._established.is_set()

    @property
    def is_ready(self) -> bool:
        return self._established.is_set() and not self._closed.is_set()

    @property
    def peer_address(self) -> str:
        """The remote IP address alone (`host` without its port)."""
        return self.host.rsplit(":", 1)[0]

    def socket(self) -> Any:
        """The connection's socket (for options such as keepalive), or None."""
        return self._transport.get_extra_info("socket") if self._transport is not None else None

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def info(self) -> dict[str, Any]:
        """The reference engine's connection item."""
        return {
            "proto": self.proto,
            "host": self.host,
            "idurl": self.peer_idurl,
            "global_id": idurl_to_global_id(self.peer_idurl) if self.peer_idurl else "",
            "state": self.machine.state,
            "status": "active" if self.is_ready else "handshake",
            "direction": self.direction,
            "bytes_received": self.bytes_in,
            "bytes_sent": self.bytes_out,
            "connection_id": self.link_id,
            "created": self.created,
        }

    def streams(self) -> list[dict[str, Any]]:
        """Large frames moving on this link right now, with their progress."""
        found = []
        pending = self._decoder.pending_body
        if pending and pending[1] >= STREAM_THRESHOLD:
            found.append(self._stream("in", pending[0], pending[1]))
        if self._sending and self._transport is not None:
            total = self._sending[0]
            done = max(0, total - self._transport.get_write_buffer_size())
            found.append(self._stream("out", done, total))
        return found

    def _stream(self, direction: str, done: int, total: int) -> dict[str, Any]:
        return {"stream_id": f"tcp_{self.link_id}_{direction}", "proto": self.proto, "direction": direction,
                "idurl": self.peer_idurl, "host": self.host, "size": total, "bytes": done,
                "progress": round(100.0 * done / total, 1) if total else 100.0}


class TcpTransport:
    """Listens on the configured port, dials peers' `tcp://` contacts, keeps one link per peer."""

    proto = "tcp"

    def __init__(self, credentials: Credentials, events: LinkEvents, options: TcpOptions,
                 automats: AutomatRegistry | None = None):
        self.credentials = credentials
        self.events = events
        self.options = options
        self.automats = automats
        self._server: asyncio.base_events.Server | None = None
        self._all: set[TcpLink] = set()
        self._by_peer: dict[str, list[TcpLink]] = {}
        self._dialing: dict[str, asyncio.Future[TcpLink]] = {}
        self._reconnecting: dict[str, asyncio.Task[None]] = {}
        self._last_traffic: dict[str, float] = {}
        self._moved: dict[str, str] = {}
        """Earlier IDURL -> the IDURL the node answered with after a rotation."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = True
        self.relay_server: RelayServer | None = None
        """Relays for nodes that asked (ROUTE); None on a node that never relays."""
        self.relay_client: RelayClient | None = None
        """Keeps our own relay when we are behind NAT."""

    # ---- life cycle --------------------------------------------------------------------------

    def accepts(self, contact: str) -> bool:
        return parse_tcp_contact(contact) is not None

    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        """Listen on host:port. Raises `OSError` when the port cannot be bound."""
        if self.listening():
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: TcpLink(self, "incoming"), self.options.host,
                                                self.options.port, reuse_address=True)
        self._stopped = False
        log.info("tcp transport listening on %s:%d", self.options.host, self.options.port)

    async def stop(self) -> None:
        """Stop listening, close every link, stop reconnecting."""
        self._stopped = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._reconnecting.values()) + list(self._tasks):
            task.cancel()
        for link in list(self._all):
            link.abort()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=2)
        self._reconnecting.clear()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- sending -----------------------------------------------------------------------------

    def link_for(self, idurl: str) -> TcpLink | None:
        """The peer's newest ready link (a node that took an identity over dialed after the old holder)."""
        idurl = self._moved.get(idurl, idurl)
        return next((link for link in reversed(self._by_peer.get(idurl, [])) if link.is_ready), None)

    def connected(self, idurl: str) -> bool:
        return self.link_for(idurl) is not None

    async def send(self, idurl: str, contacts: list[str], parts: list[Buffer]) -> TcpLink:
        """Send one packet's parts on the peer's link, dialing it first if needed.

        Raises:
            PeerUnreachableError: no link could be opened or the link broke while sending.
        """
        link = await self.connect(idurl, contacts)
        self._last_traffic[idurl] = time.monotonic()
        try:
            await link.send_frame(FrameKind.PACKET, parts)
        except ConnectionError as err:
            raise PeerUnreachableError(str(err)) from None
        return link

    async def connect(self, idurl: str, contacts: list[str]) -> TcpLink:
        """The peer's ready link; concurrent callers share one dial."""
        link = self.link_for(idurl)
        if link is not None:
            return link
        if self._stopped:
            raise PeerUnreachableError("the network is disconnected")
        dialing = self._dialing.get(idurl)
        if dialing is None:
            dialing = asyncio.ensure_future(self._dial(idurl, contacts))
            self._dialing[idurl] = dialing
            dialing.add_done_callback(lambda _: self._dialing.pop(idurl, None))
        return await asyncio.shield(dialing)

    async def _dial(self, idurl: str, contacts: list[str]) -> TcpLink:
        loop = asyncio.get_running_loop()
        last_error = "no tcp contact"
        for contact in contacts:
            address = parse_tcp_contact(contact)
            if address is None:
                continue
            try:
                _, link = await asyncio.wait_for(
                    loop.create_connection(lambda: TcpLink(self, "outgoing", idurl), *address),
                    self.options.connect_timeout)
            except (OSError, asyncio.TimeoutError) as err:
                last_error = f"{contact}: {err or 'connect timeout'}"
                continue
            try:
                await asyncio.wait_for(link.dial_handshake(), self.options.handshake_timeout)
                if link.peer_idurl != idurl:  # the peer rotated its identity: reach it by either IDURL
                    if len(self._moved) >= MAX_MOVED:
                        self._moved.clear()
                    self._moved[idurl] = link.peer_idurl
                return link
            except (hs.HandshakeError, ConnectionError, asyncio.TimeoutError) as err:
                last_error = f"{contact}: handshake failed: {err or 'timeout'}"
                link.machine.fire("handshake-failed")
                link.abort()
        raise PeerUnreachableError(last_error)

    # ---- link registry (called by links) ------------------------------------------------------

    def _attach(self, link: TcpLink) -> None:
        if link.direction == "incoming":
            refusal = self._admission(link)
            if refusal:
                self.events.on_link_rejected(self.proto, link.host, refusal)
                log.info("incoming tcp connection from %s refused: %s", link.host, refusal)
                link.abort()
                return
        self._all.add(link)
        if link.direction == "incoming":
            self._spawn(self._accept(link))

    def _admission(self, link: TcpLink) -> str:
        """Why an incoming connection is refused before any work is done for it ("" to accept)."""
        options = self.options
        if len(self._all) >= options.max_links:
            return "too_many_connections"
        pending = [other for other in self._all if other.direction == "incoming" and not other.is_established]
        if len(pending) >= options.max_handshakes:
            return "too_many_handshakes"
        if sum(1 for other in pending if other.peer_address == link.peer_address) >= options.max_handshakes_per_host:
            return "too_many_handshakes_from_host"
        return ""

    async def _accept(self, link: TcpLink) -> None:
        try:
            await asyncio.wait_for(link.accept_handshake(), self.options.handshake_timeout)
        except (hs.HandshakeError, ConnectionError, asyncio.TimeoutError) as err:
            reason = getattr(err, "reason", None) or "handshake_timeout"
            link.machine.fire("handshake-failed")
            if reason != "connection_lost":
                self.events.on_link_rejected(self.proto, link.host, f"handshake_{reason}")
                log.info("incoming tcp connection from %s refused: %s", link.host, err or reason)
            link.abort()

    def _established(self, link: TcpLink) -> None:
        peers = self._by_peer.setdefault(link.peer_idurl, [])
        first = not any(other.is_ready for other in peers)
        peers.append(link)
        self._last_traffic[link.peer_idurl] = time.monotonic()
        task = self._reconnecting.pop(link.peer_idurl, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        log.info("tcp link %d with %s established (%s)", link.link_id, link.peer_idurl, link.direction)
        if first:
            self.events.on_link_up(link)

    def _detach(self, link: TcpLink) -> None:
        self._all.discard(link)
        if not link.peer_idurl:
            return
        if self.relay_server is not None:
            self.relay_server.link_down(link)
        if self.relay_client is not None:
            self.relay_client.link_down(link)
        peers = self._by_peer.get(link.peer_idurl, [])
        if link in peers:
            peers.remove(link)
        if any(other.is_ready for other in peers):
            return
        self._by_peer.pop(link.peer_idurl, None)
        log.info("tcp link %d with %s closed", link.link_id, link.peer_idurl)
        self.events.on_link_down(link)
        if not self._stopped and link.peer_idurl not in self._reconnecting:
            self._reconnecting[link.peer_idurl] = self._spawn(self._reconnect(link.peer_idurl))

    async def _reconnect(self, idurl: str) -> None:
        """Re-dial a lost peer with exponential backoff while it was in use recently."""
        delay = self.options.reconnect_min
        try:
            while not self._stopped and not self.connected(idurl):
                if time.monotonic() - self._last_traffic.get(idurl, 0.0) > self.options.reconnect_window:
                    return
                await asyncio.sleep(delay)
                try:
                    await self.connect(idurl, await self.credentials.contacts(idurl))
                    return
                except Exception as err:  # noqa: BLE001 - any failure means: try again later
                    log.debug("reconnect to %s failed: %s", idurl, err)
                    delay = min(delay * 2, self.options.reconnect_max)
        finally:
            if self._reconnecting.get(idurl) is asyncio.current_task():
                self._reconnecting.pop(idurl, None)

    # ---- relaying (services.transport.relay) --------------------------------------------------

    def _relay_control(self, link: TcpLink, kind: FrameKind, body: bytearray) -> None:
        try:
            doc = relay.parse_control(body)
        except relay.RelayError as err:
            log.info("relay control frame from %s: %s", link.peer_idurl, err)
            link._reject("relay_control_malformed", len(body))
            return
        if kind == FrameKind.ROUTED:
            if self.relay_client is not None:
                self.relay_client.routed(link, doc)
            return
        answer = (self.relay_server.route_request(link) if self.relay_server is not None
                  else {"ok": False, "reason": "proxy_server_disabled"})
        self._spawn(self._send_quietly(link, FrameKind.ROUTED, relay.control_body(answer)))

    async def _relay_frame(self, link: TcpLink, body: bytearray) -> None:
        if self.relay_server is None:
            self.events.on_link_rejected(self.proto, link.host, "relay_disabled", len(body))
            return
        await self.relay_server.forward(link, body)

    async def _send_quietly(self, link: TcpLink, kind: FrameKind, body: bytes) -> None:
        try:
            await link.send_frame(kind, [body])
        except ConnectionError:
            pass

    def stop_relaying(self) -> None:
        """Tell every client we relay for that we stopped (the proxy server was switched off)."""
        if self.relay_server is None:
            return
        for link in self.relay_server.disable():
            self._spawn(self._send_quietly(link, FrameKind.ROUTED,
                                           relay.control_body({"ok": False, "reason": "proxy_server_disabled"})))

    # ---- views ---------------------------------------------------------------------------------

    def links(self) -> list[TcpLink]:
        return sorted(self._all, key=lambda link: link.link_id)

    def streams(self) -> list[dict[str, Any]]:
        return [stream for link in self.links() for stream in link.streams()]

    def status(self) -> dict[str, Any]:
        return {"proto": self.proto, "state": "LISTENING" if self.listening() else "STOPPED",
                "host": self.options.host, "port": self.options.port,
                "connections": sum(1 for link in self._all if link.is_ready),
                "reconnecting": sorted(self._reconnecting)}
