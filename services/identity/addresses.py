"""Where this node is reached (its contacts) and where its identity is published (identity servers).

Contacts come from the transport (a relay's `proxy://` contact while we are behind NAT), else
`tcp://<advertised host>:<tcp port>`; the advertised host from the options, else what a DHT peer
sees (STUN), else the local address that routes to a DHT seed. Identity servers come from the
API call, the options and the selected network. Other processes are asked through a `Caller`
(the bus in production), so this module has no bus code of its own.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any, Protocol

from common import ids, network_config
from common.errors import InvalidArgumentError, NodeError
from services.identity import document

log = logging.getLogger(__name__)

ANY_ADDRESS = ("0.0.0.0", "::", "*")
STUN_TIMEOUT = 5.0
RELAY_ASK_TIMEOUT = 2.0
"""The transport answers at once; it may be down (restarting), and then the direct address is used."""


class Caller(Protocol):
    async def call_internal(self, process: str, verb: str, timeout: float = ..., **kwargs: Any) -> Any: ...


class Options(Protocol):
    def get(self, key: str) -> Any: ...


class Addresses:
    """This node's contacts and identity servers, as the options and the network say now."""

    def __init__(self, bus: Caller, config: Options, networks_dir: Path):
        self.bus = bus
        self.config = config
        self.networks_dir = networks_dir

    async def contacts(self) -> list[str]:
        """Where other nodes reach our transport: our relay's `proxy://` contact while the transport
        keeps one (we are behind NAT), else `tcp://<advertised host>:<tcp port>`."""
        try:
            relayed = await self.bus.call_internal("transport", "relay_contact", timeout=RELAY_ASK_TIMEOUT)
            if isinstance(relayed, dict) and relayed.get("contact"):
                return [str(relayed["contact"])]
        except NodeError as exc:
            log.debug("no relay contact from the transport: %s", exc.reason)
        host = await self.advertised_host()
        port = int(self.config.get("services/tcp-connections/tcp-port"))
        return [f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"]

    async def advertised_host(self) -> str:
        """The configured external host, else a specific listen address, else the address a DHT peer
        sees us at (STUN), else the local address that routes to a DHT seed, else loopback."""
        external = str(self.config.get("services/tcp-connections/external-host") or "").strip()
        if external:
            return external
        listen = str(self.config.get("services/tcp-connections/listen-host") or "").strip()
        if listen and listen not in ANY_ADDRESS:
            return listen
        try:
            seen = await self.bus.call_internal("dht", "stun", timeout=STUN_TIMEOUT)
            if seen.get("ip"):
                return str(seen["ip"])
        except NodeError as exc:
            log.info("no DHT peer told us our address: %s", exc.reason)
        return route_address(self._seed_hosts()) or "127.0.0.1"

    def _network(self) -> network_config.NetworkConfig | None:
        return network_config.load_selected(self.networks_dir, self.config.get("services/network/selected"))

    def _seed_hosts(self) -> list[str]:
        network = self._network()
        seeds = list(network.dht_seeds) if network else []
        extra = str(self.config.get("services/entangled-dht/known-nodes") or "")
        seeds += [s.strip() for s in extra.split(",") if s.strip()]
        return [seed.rpartition(":")[0] or seed for seed in seeds]

    def known_servers(self) -> list[str]:
        """Identity servers of the selected network, then the `known-servers` option."""
        found: list[str] = []
        network = self._network()
        listed = list(network.identity_servers) if network else []
        extra = str(self.config.get("services/identity-propagate/known-servers") or "")
        listed += [s for s in extra.split(",") if s.strip()]
        for server in listed:
            try:
                normal = ids.normalize_server(server)
            except InvalidArgumentError:
                log.warning("ignoring malformed identity server %r", server)
                continue
            if normal not in found:
                found.append(normal)
        return found

    def preferred_servers(self) -> list[str]:
        """`services/identity-propagate/preferred-servers`: where rotation and creation go first."""
        text = str(self.config.get("services/identity-propagate/preferred-servers") or "")
        found = []
        for server in (s.strip() for s in text.split(",") if s.strip()):
            try:
                found.append(ids.normalize_server(server))
            except InvalidArgumentError:
                log.warning("ignoring malformed preferred identity server %r", server)
        return found

    def identity_servers(self, preferred: Any) -> list[str]:
        """The servers a new identity goes to: `preferred` (a list or a comma-separated text), else
        the preferred and known ones; raises `InvalidArgumentError` (`no_identity_servers`)."""
        if isinstance(preferred, str):
            preferred = [s for s in preferred.split(",") if s.strip()]
        if preferred is not None and not isinstance(preferred, list):
            raise InvalidArgumentError("preferred_servers must be a list of host:port")
        servers: list[str] = []
        for server in preferred or []:
            normal = ids.normalize_server(server)
            if normal not in servers:
                servers.append(normal)
        servers = servers or list(dict.fromkeys(self.preferred_servers() + self.known_servers()))
        if not servers:
            raise InvalidArgumentError("no identity servers known: pass preferred_servers or select a network",
                                       reason="no_identity_servers")
        return servers[: document.MAX_SOURCES]


def route_address(hosts: list[str]) -> str | None:
    """The local address the OS would send from to reach one of `hosts` (no packet is sent)."""
    for host in hosts:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((host, 9))
                address = str(probe.getsockname()[0])
        except OSError:
            continue
        if address and not address.startswith("0."):
            return address
    return None
