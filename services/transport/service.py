"""The transport process's bus endpoints: decode a request, call the gateway, encode the reply.

Internal verbs (for other processes):

    transport.send(remote_idurl, command, payload=None, timeout=30, packet_id=None, payload_b64=None,
                   reply_file=False)
        -> {"command": "Ack"|"Fail"|..., "packet_id", "payload": <JSON>}  (or "payload_b64" when the
           reply is binary). Exactly one of payload / payload_b64 is sent; payload_b64 travels as raw
           bytes between nodes. With `reply_file`, a binary reply comes back as a spool file instead:
           {"command", "packet_id", "payload_path", "payload_sha256", "payload_size"}; the caller
           owns that file (reads it, deletes it).

    transport.send_file(remote_idurl, command, path, packet_id=None, timeout=30, payload_sha256=None)
        -> the reply of `send(..., reply_file=True)`. Sends the file at `path` (inside the spool or the
           storage state folder; not deleted) as a binary packet; `payload_sha256` (hex), when given,
           is trusted and saves hashing the file again.

    transport.send_raw: the binary form of `send` over the bus (kept for benchmarks and old callers;
        bulk data goes by `send_file`). A NATS request whose body is the raw payload and whose
        `Bitdust-Meta` header (common.bus.META_HEADER) holds {"remote_idurl", "command", "timeout",
        "packet_id"}; the reply body is the reply packet's raw payload with meta {"command",
        "packet_id", "binary"} (or {"error": ...}). Use `Bus.request_binary`.

Requests that arrive from other nodes are sent as JSON NATS requests to `inbox.<Command>`; see
`gateway.inbox_body` for the document and `gateway.reply_fields` for the expected reply. A binary
packet's payload does not cross the bus: it is written to a new spool file and the document (less
the payload) carries {"binary": true, "payload_path", "payload_sha256", "payload_size"}. The
consumer may rename the file away; once it answered (or failed, or timed out) the transport deletes
the file if it is still there. A reply may name a file to send back as the binary payload:
{"command": "Data", "payload_path", "payload_sha256"?: hex, "payload_path_temporary"?: true}
(see `files.PayloadFiles.load_reply`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from common import codec, crypto, spool, subjects
from common.bus import Bus, binary_meta
from common.endpoint import Reply, endpoint
from common.loop_lag import LagMonitor
from common.memory import Trimmer
from common.errors import DeadlineError, InvalidArgumentError, NodeError, NotFoundError, UnavailableError
from common.packet import COMMANDS, Packet
from common.process import ProcessContext, ServiceBase
from services.transport import network, relay
from services.transport.files import PayloadFiles
from services.transport.gateway import Gateway, inbox_body, payload_fields
from services.transport.metrics import transport_samples
from common.ids import idurl_to_global_id, idurl_of
from services.transport.presence import CONNECTED, OFFLINE
from services.transport.protocol import PeerUnreachableError
from services.transport.tcp import TcpOptions, TcpTransport

log = logging.getLogger(__name__)

IDENTITY_EVENTS = ("local-identity-created", "local-identity-written", "local-identity-recovered",
                   "local-identity-rotated", "local-identity-erased")
"""Events after which our identity is (re)loaded and the network set up if it was waiting for it."""

TCP_PORT_OPTION = "services/tcp-connections/tcp-port"
TCP_HOST_OPTION = "services/tcp-connections/listen-host"
EXTERNAL_HOST_OPTION = "services/tcp-connections/external-host"
PROXY_SERVER_OPTION = "services/proxy-server/enabled"
PROXY_TRANSPORT_OPTIONS = "services/proxy-transport/"
PROXY_ROUTERS_LAYER = 2
RELAY_CANDIDATES = 6
DEFAULT_PING_TIMEOUT = 10.0
BEST_EFFORT_TIMEOUT = 3.0
NUDGE_ATTEMPTS = 30


class BusIdentity:
    """The identity process over the bus, as the gateway's `IdentityDirectory`."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def my_identity(self) -> dict[str, Any]:
        return dict(await self.bus.call_internal("identity", "my_identity", timeout=5))

    async def sign(self, data: bytes) -> bytes:
        reply = await self.bus.call_internal("identity", "sign", timeout=10, data=crypto.b64(data))
        return crypto.unb64(str(reply["signature"]))

    async def fetch(self, idurl: str, refresh: bool = False) -> dict[str, Any]:
        return dict(await self.bus.call_internal("identity", "fetch", timeout=15, idurl=idurl, refresh=refresh))


class BusInbox:
    """Delivers request packets as NATS requests on `inbox.<Command>`; binary payloads by spool file."""

    def __init__(self, bus: Bus, files: PayloadFiles):
        self.bus = bus
        self.files = files

    async def deliver(self, pkt: Packet, timeout: float) -> dict[str, Any]:
        subject = subjects.inbox(pkt.command)
        if not pkt.binary:
            reply = await self.bus.request_raw(subject, codec.dumps(inbox_body(pkt)), timeout)
            return await self.files.load_reply(reply)
        handed = await self.files.write(pkt, kept=pkt.command == "Data")
        try:
            body = dict(inbox_body(pkt, with_payload=False), binary=True, **handed)
            return await self.files.load_reply(await self.bus.request_raw(subject, codec.dumps(body), timeout))
        finally:
            # The consumer may have renamed it into place; otherwise it is ours to remove.
            spool.remove(Path(handed["payload_path"]))


_PROXY_STATES = {relay.OFF: "disabled", relay.DIRECT: "not_needed", relay.FINDING: "starting",
                 relay.CONNECTED: "started"}


def _check_command(command: str) -> None:
    if command not in COMMANDS:
        raise InvalidArgumentError(f"unknown packet command {command!r}", reason="invalid_command")


def _tcp_options(ctx: ProcessContext) -> TcpOptions:
    host = str(ctx.config.get(TCP_HOST_OPTION) or "0.0.0.0")
    return TcpOptions(host=host, port=int(ctx.config.get(TCP_PORT_OPTION)))


def _protocols(protocols: Any) -> set[str] | None:
    if protocols in (None, "", []):
        return None
    items = protocols.split(",") if isinstance(protocols, str) else list(protocols)
    return {str(p).strip().lower() for p in items if str(p).strip()}


class TransportService(ServiceBase):
    """Serves the network_*, user_ping/status, connections/packets/streams API methods and `send`."""

    def __init__(self, ctx: ProcessContext):
        super().__init__(ctx)
        self.files = PayloadFiles.for_home(ctx.home)
        self.inbox = BusInbox(ctx.bus, self.files)
        self.gateway = Gateway(BusIdentity(ctx.bus), self.inbox, ctx.automats, self._presence_changed)
        self.tcp = TcpTransport(self.gateway, self.gateway, _tcp_options(ctx), ctx.automats)
        self.gateway.transports.append(self.tcp)
        # A node that needs a relay itself cannot relay for others.
        self.relay_server = relay.RelayServer(
            lambda: bool(ctx.config.get(PROXY_SERVER_OPTION)) and not self.relay_client.behind_nat)
        self.tcp.relay_server = self.relay_server
        self.gateway.transports.append(relay.RelayTransport(self.tcp, self.relay_server, self.gateway.is_me))
        self.relay_client = relay.RelayClient(self.tcp, relay.ClientHooks(
            enabled=lambda: bool(ctx.config.get(PROXY_TRANSPORT_OPTIONS + "enabled")),
            reachable_by_config=lambda: bool(str(ctx.config.get(EXTERNAL_HOST_OPTION) or "").strip()),
            stun=self._stun_ip, candidates=self._relay_candidates, contacts=self.gateway.contacts,
            publish=self._publish_contacts))
        self.tcp.relay_client = self.relay_client
        self.connector = network.NetworkConnector(self.gateway, ctx.automats)
        self.gateway.on_self_connection = self._self_connection
        self.lag = LagMonitor()
        """How late this process's event loop runs (`packets_stats.event_loop_lag`)."""
        self.trimmer = Trimmer()  # the payloads of a burst of packets freed: given back when it is done
        self._subscriptions: list[Any] = []
        ctx.metrics.register(lambda: transport_samples(self.gateway))

    # ---- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.lag.start()
        self.trimmer.start()
        removed = await asyncio.to_thread(self.files.prepare)
        if removed:
            log.info("removed %d stale spool files", removed)
        for event_id in IDENTITY_EVENTS:
            sub = await self.ctx.bus.nc.subscribe(subjects.event(event_id), cb=self._on_identity_event)
            self._subscriptions.append(sub)
        raw = await self.ctx.bus.nc.subscribe(subjects.internal("transport", "send_raw"), queue="transport",
                                              cb=self._on_send_raw)
        self._subscriptions.append(raw)
        self.connector.start()
        self.relay_client.start()

    async def _on_send_raw(self, msg: Any) -> None:
        self.ctx.bus.spawn(self._send_raw(msg))

    async def _send_raw(self, msg: Any) -> None:
        """`transport.send_raw`: the binary form of `send` (meta header + raw payload, both ways)."""
        meta = binary_meta(msg) or {}
        try:
            command = str(meta.get("command") or "")
            _check_command(command)
            if not isinstance(meta.get("remote_idurl"), str):
                raise InvalidArgumentError("remote_idurl is required", reason="invalid_argument")
            reply = await self.gateway.send(meta["remote_idurl"], command, msg.data, binary=True,
                                            timeout=float(meta.get("timeout") or 30),
                                            packet_id=meta.get("packet_id") or None)
            assert reply is not None
            await self.ctx.bus.respond_binary(
                msg, {"command": reply.command, "packet_id": reply.packet_id, "binary": reply.binary}, reply.payload)
        except NodeError as err:
            await self.ctx.bus.respond_binary(msg, err.to_wire())
        except Exception:  # noqa: BLE001 - the edge: log, answer a generic error
            log.exception("send_raw failed")
            await self.ctx.bus.respond_binary(msg, NodeError("internal error").to_wire())

    async def stop(self) -> None:
        self.lag.stop()
        await self.trimmer.stop()
        await self.relay_client.stop()
        for sub in self._subscriptions:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the bus may already be closing
                pass
        await self.connector.stop()

    async def on_config_changed(self, keys: list[str]) -> None:
        if not keys or any(key in (TCP_PORT_OPTION, TCP_HOST_OPTION) for key in keys):
            options = _tcp_options(self.ctx)
            if options != self.tcp.options and self.connector.state != network.DISCONNECTED:
                self.tcp.options = options
                await self.connector.reconnect()
        if (not keys or PROXY_SERVER_OPTION in keys) and not self.ctx.config.get(PROXY_SERVER_OPTION):
            self.tcp.stop_relaying()
        if not keys or any(k.startswith(PROXY_TRANSPORT_OPTIONS) or k == EXTERNAL_HOST_OPTION for k in keys):
            self.relay_client.wake(recheck_nat=True)

    # ---- the relay client's view of the node ----------------------------------------------------

    async def _stun_ip(self) -> str:
        try:
            found = await self.ctx.bus.call_internal("dht", "stun", timeout=20)
        except NodeError as err:
            log.info("STUN for the NAT check failed: %s", err.reason)
            return ""
        return str((found or {}).get("ip") or "")

    async def _relay_candidates(self) -> list[str]:
        """`preferred-routers` first, then nodes announced on the DHT's PROXY_ROUTERS layer."""
        text = str(self.ctx.config.get(PROXY_TRANSPORT_OPTIONS + "preferred-routers") or "")
        found = [idurl_of(item.strip()) for item in text.split(",") if item.strip()]
        try:
            found += [str(i) for i in await self.ctx.bus.call(
                subjects.api("dht", "dht_user_random"), {"layer_id": PROXY_ROUTERS_LAYER, "count": RELAY_CANDIDATES},
                timeout=20) or []]
        except NodeError as err:
            log.info("no relay candidates from the DHT: %s", err.reason)
        return [idurl for idurl in dict.fromkeys(found) if not self.gateway.is_me(idurl)]

    async def _publish_contacts(self) -> None:
        try:
            await self.ctx.bus.call_internal("identity", "refresh_contacts", timeout=60)
        except NodeError as err:
            log.warning("our relay changed but the identity was not published: %s", err.reason)

    @endpoint("relay_contact", internal=True)
    async def relay_contact(self) -> dict[str, Any]:
        """The `proxy://` contact the identity must advertise while we are relayed (else null)."""
        return {"contact": self.relay_client.contact or None, **self.relay_client.status()}

    async def _on_identity_event(self, msg: Any) -> None:
        await self.connector.identity_changed()
        self.relay_client.wake()
        try:
            event = codec.loads(msg.data)
        except ValueError:
            return
        data = event.get("data") if isinstance(event, dict) else None
        if isinstance(data, dict) and event.get("event_id") == "local-identity-recovered" and data.get("old_contacts"):
            self.ctx.bus.spawn(self._nudge_previous_holder([str(c) for c in data["old_contacts"]]))
        if event.get("event_id") == "local-identity-rotated":
            self.ctx.bus.spawn(self._announce_rotation())

    async def _announce_rotation(self) -> None:
        """Tell every peer we are in touch with that our identity moved; each fetches the new one."""
        peers = [idurl for idurl, state in self.gateway.presence.items() if state == CONNECTED]
        results = await asyncio.gather(*(self.gateway.send(idurl, "Identity", codec.dumps("rotated"),
                                                           timeout=BEST_EFFORT_TIMEOUT) for idurl in peers),
                                       return_exceptions=True)
        told = sum(1 for r in results if not isinstance(r, BaseException))
        log.info("told %d of %d connected peers about our rotated identity", told, len(peers))

    async def _nudge_previous_holder(self, contacts: list[str]) -> None:
        """Dial the contacts the identity had before we took it over.

        The node there (if it still runs) refuses a dialer with its own identity and, seeing that,
        asks its identity servers whether it was taken over; the servers, not us, are the proof.
        """
        for _ in range(NUDGE_ATTEMPTS):
            me = self.gateway.local_idurl()
            if me and self.tcp.listening():
                mine = set(self.gateway.me.get("contacts") or []) if self.gateway.me else set()
                old = [c for c in contacts if c not in mine]
                try:
                    if old:
                        await self.tcp.connect(me, old)
                except PeerUnreachableError as err:
                    log.info("told the previous holder of our identity at %s: %s", ", ".join(old), err)
                return
            await asyncio.sleep(1.0)  # the network comes up after the identity changed

    def _self_connection(self) -> None:
        self.ctx.bus.spawn(self._check_takeover())

    async def _check_takeover(self) -> None:
        try:
            reply = await self.ctx.bus.call_internal("identity", "check_takeover", timeout=20)
        except NodeError as err:
            log.info("takeover check failed: %s", err.reason)
            return
        if reply.get("taken_over"):
            log.warning("our identity was taken over by another node; the network is disconnected")

    def _presence_changed(self, idurl: str, old: str, new: str) -> None:
        data = self._status(idurl, new)
        bus = self.ctx.bus
        bus.spawn(bus.publish_model("online_status", idurl, dict(data, state=new)))
        if new == CONNECTED:
            bus.spawn(bus.publish_event("node-connected", dict(data, old_state=old, new_state=new)))
        elif old == CONNECTED:
            bus.spawn(bus.publish_event("node-disconnected", dict(data, old_state=old, new_state=new)))

    def model_snapshot(self, model_name: str, query_details: Any = None) -> list[tuple[str, Any]] | None:
        if model_name != "online_status":
            return None
        items = self.gateway.presence.items()
        return [(idurl, dict(self._status(idurl, state), state=state)) for idurl, state in items]

    @staticmethod
    def _status(idurl: str, state: str) -> dict[str, Any]:
        return {"idurl": idurl, "global_id": idurl_to_global_id(idurl), "contact_state": state}

    # ---- internal verbs --------------------------------------------------------------------------

    @endpoint("send", internal=True)
    async def send(self, remote_idurl: str, command: str, payload: Any = None, timeout: float = 30,
                   packet_id: str | None = None, payload_b64: str | None = None,
                   reply_file: bool = False) -> dict[str, Any]:
        """Send a signed packet and wait for the reply packet with the same id."""
        _check_command(command)
        if payload_b64 is not None:
            try:
                raw, binary = crypto.unb64(payload_b64), True
            except crypto.CryptoError:
                raise InvalidArgumentError("payload_b64 is not base64", reason="invalid_payload") from None
        else:
            raw, binary = codec.dumps(payload), False
        reply = await self.gateway.send(remote_idurl, command, raw, binary=binary, timeout=float(timeout),
                                        packet_id=packet_id or None)
        assert reply is not None
        return await self._reply_document(reply, bool(reply_file))

    @endpoint("send_file", internal=True)
    async def send_file(self, remote_idurl: str, command: str, path: str, packet_id: str | None = None,
                        timeout: float = 30, payload_sha256: str | None = None) -> dict[str, Any]:
        """Send a file's content as a binary packet and wait for the reply (binary replies as spool files).

        Raises:
            InvalidArgumentError: `path` outside the spool and storage state folders (`invalid_path`).
            NotFoundError: no file at `path` (`file_not_found`).
        """
        _check_command(command)
        data, digest = await self.files.read(path, payload_sha256)
        reply = await self.gateway.send(remote_idurl, command, data, binary=True, timeout=float(timeout),
                                        packet_id=packet_id or None, payload_sha256=digest)
        assert reply is not None
        return await self._reply_document(reply, True)

    async def _reply_document(self, reply: Packet, to_file: bool) -> dict[str, Any]:
        """`{"command", "packet_id"}` plus the payload: inline, or a binary one as a spool file."""
        doc: dict[str, Any] = {"command": reply.command, "packet_id": reply.packet_id}
        doc.update(await self.files.write(reply) if to_file and reply.binary else payload_fields(reply))
        return doc

    # ---- API methods ---------------------------------------------------------------------------

    @endpoint()
    async def network_connected(self, wait_timeout: float = 5) -> dict[str, Any]:
        if not await self.connector.wait_connected(float(wait_timeout or 0)):
            detail = self.connector.last_error or f"network state is {self.connector.state}"
            raise UnavailableError(f"network is not connected: {detail}", reason="network_disconnected")
        # The reference's answer: its network services and their states, here read from what runs.
        def state(running: bool) -> str:
            return "started" if running else "stopped"

        return {"service_network": state(self.connector.state == network.CONNECTED),
                "service_gateway": state(self.gateway.local_idurl() is not None),
                "service_p2p_hookups": state(self.connector.state == network.CONNECTED),
                "service_tcp_connections": state(self.tcp.listening()),
                "service_proxy_transport": _PROXY_STATES.get(self.relay_client.state, "stopped")}

    @endpoint()
    async def network_disconnect(self) -> Reply:
        await self.connector.disconnect()
        return Reply({"network_connector_state": self.connector.state}, "network is disconnected")

    @endpoint()
    async def network_reconnect(self) -> Reply:
        await self.connector.reconnect()
        await self.connector.wait_connected(5)
        return Reply({"network_connector_state": self.connector.state}, "network connections restarted")

    @endpoint()
    async def network_status(self, suppliers: bool = False, customers: bool = False, cache: bool = False,
                             tcp: bool = False, udp: bool = False, proxy: bool = False,
                             dht: bool = False) -> dict[str, Any]:
        me = self.gateway.me or {}
        idurl = str(me.get("idurl") or "")
        result: dict[str, Any] = {
            "global_id": str(me.get("global_id") or (idurl_to_global_id(idurl) if idurl else "")),
            "idurl": idurl,
            "identity_contacts": list(me.get("contacts") or []),
            "identity_revision": me.get("revision"),
            "identity_sources": list(me.get("sources") or ([idurl] if idurl else [])),
            "network_connector_state": self.connector.state,
            "p2p_connector_state": self.connector.state,
        }
        if suppliers:
            result["suppliers"] = await self._peers_section("suppliers_idurls")
        if customers:
            result["customers"] = await self._peers_section("customers_idurls")
        if cache:
            result["cache"] = {"count": len(self.gateway._keys),
                               "identity": await self._best_effort("identity", "cache_stats")}
        if tcp:
            result["tcp"] = dict(self.tcp.status(), links=[link.info() for link in self.tcp.links()])
        if proxy:
            result["proxy"] = dict(self.relay_client.status(), server=self.relay_server.status())
        if dht or udp:
            dht_status = await self._best_effort("dht", "status")
            if dht:
                result["dht"] = dht_status
            if udp:
                result["udp"] = dht_status.get("udp", {"state": "unknown"}) if "error" not in dht_status else dht_status
        return result

    @endpoint()
    async def network_stun(self, udp_port: int | None = None, dht_port: int | None = None) -> dict[str, Any]:
        # From the DHT's own socket unless `udp_port` names another local port; `dht_port` is the
        # port the seeds' STUN answers on when it is not theirs by default.
        try:
            found = await self.ctx.bus.call_internal("dht", "stun", timeout=20, udp_port=udp_port, dht_port=dht_port)
        except NodeError as err:
            raise UnavailableError(f"STUN failed: {err.message}", reason="stun_failed") from None
        # The reference's fields: one peer's answer cannot tell a symmetric NAT, hence type "unknown".
        return dict(found or {}, result="stun-success", type="unknown", details=[])

    @endpoint()
    async def user_ping(self, user_id: str, timeout: float | None = None, retries: int = 1) -> Reply:
        idurl = idurl_of(user_id)
        attempts = max(1, int(retries or 1))
        wait = float(timeout) if timeout else DEFAULT_PING_TIMEOUT
        me = self.gateway.me or {}
        ping = codec.dumps({"idurl": me.get("idurl"), "revision": me.get("revision")})
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                reply = await self.gateway.send(idurl, "Identity", ping, timeout=wait)
            except (DeadlineError, UnavailableError):
                if attempt == attempts:
                    raise
                continue
            assert reply is not None
            rtt = time.monotonic() - started
            result = dict(self._status(idurl, self.gateway.presence.state(idurl) or OFFLINE),
                          command=reply.command, packet_id=reply.packet_id, round_trip=round(rtt, 6))
            return Reply(result, [f"signed{{{reply.command}({reply.packet_id})}}",
                                  f"{reply.command} from {idurl_to_global_id(idurl)} in {rtt:.3f}s"])
        raise DeadlineError("ping was not answered", reason="timeout")

    @endpoint()
    async def user_status(self, user_id: str) -> dict[str, Any]:
        idurl = idurl_of(user_id)
        state = self.gateway.presence.state(idurl)
        if state is None:
            try:
                await self.gateway.peer_identity(idurl)
            except NotFoundError:
                raise NotFoundError(f"unknown user {user_id}", reason="user_not_found") from None
            state = OFFLINE
        return self._status(idurl, state)

    @endpoint()
    async def user_status_check(self, user_id: str, timeout: float | None = None) -> dict[str, Any]:
        idurl = idurl_of(user_id)
        if self.gateway.presence.state(idurl) != CONNECTED:
            try:
                wait = float(timeout or DEFAULT_PING_TIMEOUT)
                await self.gateway.send(idurl, "Identity", codec.dumps("ping"), timeout=wait)
            except NotFoundError:
                raise NotFoundError(f"unknown user {user_id}", reason="user_not_found") from None
            except (DeadlineError, UnavailableError) as err:
                log.debug("status check of %s: %s", idurl, err.reason)
        return self._status(idurl, self.gateway.presence.state(idurl) or OFFLINE)

    @endpoint()
    async def connections_list(self, protocols: Any = None) -> list[dict[str, Any]]:
        wanted = _protocols(protocols)
        return [link.info() for t in self.gateway.transports if wanted is None or t.proto in wanted
                for link in t.links()]

    @endpoint()
    async def packets_list(self) -> list[dict[str, Any]]:
        return self.gateway.packets_in_flight()

    @endpoint()
    async def packets_stats(self) -> dict[str, Any]:
        stats = self.gateway.stats.as_dict()
        stats["in"]["identity_cache_count"] = len(self.gateway._keys)
        stats["event_loop_lag"] = self.lag.snapshot()
        return stats

    @endpoint()
    async def streams_list(self, protocols: Any = None) -> list[dict[str, Any]]:
        wanted = _protocols(protocols)
        return [s for t in self.gateway.transports if wanted is None or t.proto in wanted for s in t.streams()]

    # ---- helpers ---------------------------------------------------------------------------------

    async def _best_effort(self, process: str, verb: str, **kwargs: Any) -> dict[str, Any]:
        try:
            found = await self.ctx.bus.call_internal(process, verb, timeout=BEST_EFFORT_TIMEOUT, **kwargs)
        except NodeError as err:
            return {"error": err.message, "reason": err.reason}
        return found if isinstance(found, dict) else {"result": found}

    async def _peers_section(self, verb: str) -> dict[str, Any]:
        """Reference shape of `suppliers`/`customers`: counts and peers with their contact state."""
        found = await self._best_effort("storage", verb)
        if "error" in found:
            return {"connected": 0, "total": 0, "peers": [], **found}
        idurls = [str(i) for i in found.get("idurls") or [] if i]
        peers = [{"idurl": i, "global_id": idurl_to_global_id(i), "state": self.gateway.presence.state(i) or OFFLINE}
                 for i in idurls]
        section: dict[str, Any] = {"connected": sum(1 for p in peers if p["state"] == CONNECTED),
                                   "total": len(peers), "peers": peers}
        for key in ("desired", "requested"):
            if key in found:
                section[key] = found[key]
        return section
