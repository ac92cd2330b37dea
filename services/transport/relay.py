"""The NAT relay: the reference engine's proxy pair, `service_proxy_server` and `service_proxy_transport`.

A node that cannot be dialled (behind a NAT router: the address a DHT peer sees is not one of its
own) keeps an outbound TCP link to a reachable node that relays for it, and advertises the relay in
its identity as `proxy://<relay host>:<relay port>/<relay IDURL>`. Peers send to such a contact by
dialling the relay (an ordinary authenticated link to the relay's own identity) and writing RELAY
frames, each one target IDURL plus one whole signed packet. The relay writes the packet, untouched,
as a PACKET frame on the link the target opened; the target verifies the creator's signature as for
any packet, so a relay can drop or delay packets but not alter or forge them. Replies go back the
ordinary way: a NATed node can dial out, and a link it opened carries traffic both ways.

    client                               relay                                peer
      |--- dial + handshake ------------>|                                     |
      |--- ROUTE ----------------------->|  routes[client] = that link         |
      |<-- ROUTED {"ok": true} ----------|                                     |
      |                                  |<-- dial + handshake ----------------|
      |<-- PACKET (as signed by peer) ---|<-- RELAY (client IDURL | packet) ---|

What a relay spends is bounded: only authenticated links may ask (`max_routes` clients at once, at
most `max_routes_per_host` of them from one IP address, so that one host's many identities cannot
take every route) or relay; RELAY frames obey the frame size limit and the link's read queue, and
a relay awaits each forward before reading the next frame, so a fast sender is slowed to the
target's pace.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common import codec
from common.background import Background
from services.transport.framing import FrameKind
from common.ids import parse_tcp_contact
from services.transport.protocol import Buffer, PeerUnreachableError

if TYPE_CHECKING:
    from services.transport.tcp import TcpLink, TcpTransport

log = logging.getLogger(__name__)

SCHEME = "proxy://"
ROUTE_HEADER = struct.Struct(">H")
MAX_TARGET = 1024
"""The longest target IDURL a RELAY frame may name."""
MAX_CONTROL_FRAME = 1024
"""ROUTE and ROUTED bodies are small JSON documents."""


class RelayError(ValueError):
    """A malformed RELAY frame or relay contact."""


# ---- contacts and frames ---------------------------------------------------------------------

def relay_contact(host: str, port: int, relay_idurl: str) -> str:
    """The contact a relayed node advertises: its relay's address and identity."""
    where = f"[{host}]" if ":" in host else host
    return f"{SCHEME}{where}:{port}/{relay_idurl}"


def parse_relay_contact(contact: str) -> tuple[str, int, str] | None:
    """(relay host, relay port, relay IDURL) of a `proxy://` contact, or None."""
    if not contact.startswith(SCHEME):
        return None
    address, sep, relay_idurl = contact[len(SCHEME):].partition("/")
    if not sep or not relay_idurl.startswith(("http://", "https://")):
        return None
    parsed = parse_tcp_contact("tcp://" + address)
    if parsed is None:
        return None
    host = parsed[0][1:-1] if parsed[0].startswith("[") and parsed[0].endswith("]") else parsed[0]
    return host, parsed[1], relay_idurl


def encode_route(target: str) -> bytes:
    """The prefix of a RELAY frame: the target IDURL."""
    raw = target.encode()
    if not raw or len(raw) > MAX_TARGET:
        raise RelayError("relay target IDURL is empty or too long")
    return ROUTE_HEADER.pack(len(raw)) + raw


def decode_route(body: Buffer) -> tuple[str, memoryview]:
    """(target IDURL, the packet) of a RELAY frame body. Raises `RelayError`."""
    view = memoryview(body)
    if len(view) < ROUTE_HEADER.size:
        raise RelayError("relay frame too short")
    (length,) = ROUTE_HEADER.unpack_from(view)
    end = ROUTE_HEADER.size + length
    if not length or length > MAX_TARGET or len(view) <= end:
        raise RelayError("relay frame target malformed")
    try:
        target = bytes(view[ROUTE_HEADER.size:end]).decode()
    except UnicodeDecodeError:
        raise RelayError("relay frame target is not UTF-8") from None
    return target, view[end:]


def control_body(doc: dict[str, Any]) -> bytes:
    return codec.dumps(doc)


def parse_control(body: Buffer) -> dict[str, Any]:
    if len(body) > MAX_CONTROL_FRAME:
        raise RelayError("relay control frame too large")
    try:
        doc = codec.loads(bytes(body)) if len(body) else {}
    except ValueError:
        raise RelayError("relay control frame is not JSON") from None
    if not isinstance(doc, dict):
        raise RelayError("relay control frame is not an object")
    return doc


KEEPALIVE_IDLE = 20
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 4


def keep_alive(link: Any) -> None:
    """TCP keepalive on the link to our relay: a relay host that vanishes without closing the
    connection is noticed in about 40 s (and the NAT router keeps the connection's mapping)."""
    sock = link.socket() if hasattr(link, "socket") else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                            ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError as err:
        log.info("keepalive on the relay link not set: %s", err)


def is_local_address(ip: str) -> bool:
    """Is `ip` an address of this host? (Binding to it works only then.)"""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


# ---- the relay (service_proxy_server) --------------------------------------------------------

@dataclass
class RelayCounters:
    relayed_packets: int = 0
    relayed_bytes: int = 0
    dropped: int = 0
    refused_routes: int = 0


class RelayServer:
    """Routes for the nodes that asked this one to relay: client IDURL -> the link it opened."""

    def __init__(self, enabled: Callable[[], bool], max_routes: int = 64, max_routes_per_host: int = 16):
        self.enabled = enabled
        self.max_routes = max_routes
        self.max_routes_per_host = max_routes_per_host
        self.routes: dict[str, TcpLink] = {}
        self.counters = RelayCounters()

    def route_request(self, link: TcpLink) -> dict[str, Any]:
        """A client asks to be relayed on `link` (authenticated as `link.peer_idurl`); the answer."""
        idurl = link.peer_idurl
        if not self.enabled():
            self.counters.refused_routes += 1
            return {"ok": False, "reason": "proxy_server_disabled"}
        if idurl not in self.routes:
            if len(self.routes) >= self.max_routes:
                self.counters.refused_routes += 1
                return {"ok": False, "reason": "too_many_routes"}
            same_host = sum(1 for other in self.routes.values() if other.peer_address == link.peer_address)
            if same_host >= self.max_routes_per_host:
                self.counters.refused_routes += 1
                return {"ok": False, "reason": "too_many_routes_from_host"}
        self.routes[idurl] = link
        keep_alive(link)  # a client that vanished frees its route
        log.info("relaying for %s (%d routes)", idurl, len(self.routes))
        return {"ok": True}

    def link_down(self, link: TcpLink) -> None:
        if self.routes.get(link.peer_idurl) is link:
            del self.routes[link.peer_idurl]
            log.info("stopped relaying for %s: its link closed", link.peer_idurl)

    def route(self, target: str) -> TcpLink | None:
        link = self.routes.get(target)
        return link if link is not None and link.is_ready else None

    async def forward(self, link: TcpLink, body: bytearray) -> None:
        """One RELAY frame from `link`: write its packet to the target's link, or drop it."""
        try:
            target, packet = decode_route(body)
        except RelayError as err:
            self.counters.dropped += 1
            log.info("relay frame from %s dropped: %s", link.peer_idurl, err)
            return
        route = self.route(target)
        if route is None or not self.enabled():
            self.counters.dropped += 1
            log.info("relay frame from %s for %s dropped: no route", link.peer_idurl, target)
            return
        try:
            await route.send_frame(FrameKind.PACKET, [packet])
        except ConnectionError:
            self.counters.dropped += 1
            return
        self.counters.relayed_packets += 1
        self.counters.relayed_bytes += len(packet)

    def disable(self) -> list[TcpLink]:
        """Stop relaying (the option was switched off): the links of the clients that lose their route."""
        links = list(self.routes.values())
        self.routes.clear()
        return links

    def status(self) -> dict[str, Any]:
        return {"enabled": bool(self.enabled()), "routes": sorted(self.routes),
                "relayed_packets": self.counters.relayed_packets, "relayed_bytes": self.counters.relayed_bytes,
                "dropped": self.counters.dropped, "refused_routes": self.counters.refused_routes}


# ---- sending through a relay (the sending half of service_proxy_transport) -------------------

class RelayTransport:
    """A `Transport` for `proxy://` contacts: RELAY frames on a link to the target's relay."""

    proto = "proxy"

    def __init__(self, tcp: TcpTransport, server: RelayServer, is_me: Callable[[str], bool]):
        self.tcp = tcp
        self.server = server
        self.is_me = is_me

    def accepts(self, contact: str) -> bool:
        return parse_relay_contact(contact) is not None

    def listening(self) -> bool:
        return self.tcp.listening()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, idurl: str, contacts: list[str], parts: list[Buffer]) -> TcpLink:
        """Raises `PeerUnreachableError` when no relay of the peer takes the packet."""
        last_error = "no proxy contact"
        for contact in contacts:
            parsed = parse_relay_contact(contact)
            if parsed is None:
                continue
            host, port, relay_idurl = parsed
            try:
                if self.is_me(relay_idurl):  # we are its relay: straight onto the link it opened
                    route = self.server.route(idurl)
                    if route is None:
                        raise PeerUnreachableError("not relaying for it any more")
                    await route.send_frame(FrameKind.PACKET, parts)
                    return route
                link = await self.tcp.connect(relay_idurl, [f"tcp://{host}:{port}"])
                await link.send_frame(FrameKind.RELAY, [encode_route(idurl), *parts])
                return link
            except (PeerUnreachableError, ConnectionError, RelayError) as err:
                last_error = f"{contact}: {err}"
        raise PeerUnreachableError(last_error)

    def links(self) -> Sequence[TcpLink]:
        return []

    def connected(self, idurl: str) -> bool:
        return False

    def streams(self) -> list[dict[str, Any]]:
        return []

    def status(self) -> dict[str, Any]:
        return {"proto": self.proto, "state": "LISTENING" if self.listening() else "STOPPED"}


# ---- keeping a relay (the receiving half of service_proxy_transport) -------------------------

OFF = "OFF"
DIRECT = "DIRECT"
FINDING = "FINDING"
CONNECTED = "CONNECTED"


@dataclass(frozen=True)
class ClientHooks:
    """What the relay client asks of the rest of the node (the bus, in the transport process)."""

    enabled: Callable[[], bool]
    reachable_by_config: Callable[[], bool]
    """True when an external host is configured: the operator says this node can be dialled."""
    stun: Callable[[], Awaitable[str]]
    """The IP address a DHT peer sees us at ("" if none answered)."""
    candidates: Callable[[], Awaitable[list[str]]]
    """Relay IDURLs to try, preferred first."""
    contacts: Callable[[str], Awaitable[list[str]]]
    publish: Callable[[], Awaitable[None]]
    """Publish our identity again: its contacts changed (the identity process asks `relay_contact`)."""


class RelayClient:
    """Finds out whether this node can be dialled; if not, keeps a relay and re-picks it when it fails."""

    def __init__(self, tcp: TcpTransport, hooks: ClientHooks, check_interval: float = 30.0,
                 nat_check_interval: float = 120.0, route_timeout: float = 10.0, retry_after: float = 60.0):
        self.tcp = tcp
        self.hooks = hooks
        self.check_interval = check_interval
        self.nat_check_interval = nat_check_interval
        self.route_timeout = route_timeout
        self.retry_after = retry_after
        self.state = OFF
        self.behind_nat: bool | None = None
        self.relay_idurl = ""
        self.contact = ""
        self.link: TcpLink | None = None
        self.changes = 0
        self._nat_checked = float("-inf")
        self._failed: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._keeper = Background(self._keep)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}

    # ---- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._keeper.start()

    async def stop(self) -> None:
        await self._keeper.stop()

    def wake(self, recheck_nat: bool = False) -> None:
        if recheck_nat:
            self._nat_checked = float("-inf")
        self._wake.set()

    # ---- link events (from the TCP transport) ---------------------------------------------------

    def link_down(self, link: TcpLink) -> None:
        if link is self.link:
            log.info("the link to our relay %s closed", self.relay_idurl)
            self.link = None
            self.wake()

    def routed(self, link: TcpLink, doc: dict[str, Any]) -> None:
        """A ROUTED frame: the answer to our ROUTE, or the relay dropping us later."""
        waiting = self._answers.pop(id(link), None)
        if waiting is not None and not waiting.done():
            waiting.set_result(doc)
            return
        if link is self.link and not doc.get("ok"):
            log.info("relay %s stopped relaying for us: %s", self.relay_idurl, doc.get("reason"))
            self._failed[self.relay_idurl] = time.monotonic()
            self.link = None
            self.wake()

    # ---- the keeper -------------------------------------------------------------------------------

    async def _keep(self) -> None:
        while True:
            delay = self.check_interval
            try:
                if not self.tcp.listening():
                    delay = 1.0  # the network is coming up (or is down): look again soon
                await self.check()
                if self.state == FINDING:
                    delay = min(delay, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the keeper must go on
                log.exception("relay keeper step failed")
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def check(self) -> None:
        """One step: decide whether a relay is needed, and get or drop one."""
        if not self.hooks.enabled() or self.hooks.reachable_by_config() or not self.tcp.listening():
            await self._drop(OFF if not self.hooks.enabled() else DIRECT)
            return
        now = time.monotonic()
        if self.behind_nat is None or now - self._nat_checked > self.nat_check_interval:
            seen = await self.hooks.stun()
            if seen:
                self._nat_checked = now
                nat = not is_local_address(seen)
                if nat != self.behind_nat:
                    log.info("a DHT peer sees us at %s: %s", seen,
                             "behind NAT, a relay is needed" if nat else "reachable directly")
                self.behind_nat = nat
        if not self.behind_nat:
            await self._drop(DIRECT)
            return
        if self.link is not None and self.link.is_ready:
            self.state = CONNECTED
            return
        self.state = FINDING
        await self._attach()

    async def _attach(self) -> None:
        now = time.monotonic()
        self._failed = {k: t for k, t in self._failed.items() if now - t < self.retry_after}
        previous = self.relay_idurl
        tried = []
        for idurl in await self.hooks.candidates():
            if idurl in tried or (idurl in self._failed and idurl != previous):
                continue
            tried.append(idurl)
            try:
                contacts = [c for c in await self.hooks.contacts(idurl) if parse_tcp_contact(c)]
                if not contacts:
                    raise PeerUnreachableError("no tcp contact (relayed itself?)")
                link = await self.tcp.connect(idurl, contacts)
                answer = await self._ask_route(link)
                if not answer.get("ok"):
                    raise PeerUnreachableError(str(answer.get("reason") or "refused"))
            except Exception as err:  # noqa: BLE001 - any failure: the next candidate
                log.info("relay candidate %s not usable: %s", idurl, err)
                self._failed[idurl] = time.monotonic()
                continue
            address = parse_tcp_contact(contacts[0])
            assert address is not None
            keep_alive(link)
            self.link, self.relay_idurl = link, idurl
            self.contact = relay_contact(address[0].strip("[]"), address[1], idurl)
            self.state = CONNECTED
            log.info("relayed by %s: reachable at %s", idurl, self.contact)
            if idurl != previous:
                self.changes += 1
            await self.hooks.publish()
            return
        log.info("no relay found among %d candidates", len(tried))

    async def _ask_route(self, link: TcpLink) -> dict[str, Any]:
        waiting: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[id(link)] = waiting
        try:
            await link.send_frame(FrameKind.ROUTE, [control_body({"service": "service_proxy_server"})])
            return await asyncio.wait_for(waiting, self.route_timeout)
        finally:
            self._answers.pop(id(link), None)

    async def _drop(self, state: str) -> None:
        had = bool(self.contact)
        self.state, self.link, self.relay_idurl, self.contact = state, None, "", ""
        if had:
            log.info("no relay needed any more")
            await self.hooks.publish()

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "behind_nat": self.behind_nat, "router": self.relay_idurl,
                "contact": self.contact, "changes": self.changes}
