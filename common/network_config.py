"""Network configurations: where a node finds identity servers and DHT seeds.

A configuration is a JSON document:

    {"name": "localnet",
     "identity_servers": ["127.0.0.1:8084"],
     "dht_seeds": ["127.0.0.1:14441"],
     "ledger_seeds": ["127.0.0.1:8480"],
     "foundation_miners": ["mm5Yiba1U2odgUskxnXMJGQMV1DSAXVPib"]}

`ledger_seeds` are blockchain engines (`ledgerd`) to connect to; `foundation_miners` are the wallet
addresses allowed to produce blocks (`blockchain_block_produce`). Both optional.

Stored as `<home>/config/networks/<name>.json`; the option `services/network/selected` names the
active one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import codec
from common.errors import InvalidArgumentError, NotFoundError
from common.fsutil import atomic_write

NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
HOSTPORT_RE = re.compile(r"^[a-zA-Z0-9_.-]+:[0-9]{1,5}$")
ADDRESS_RE = re.compile(r"^[a-zA-Z0-9]{26,90}$")


@dataclass
class NetworkConfig:
    """One network: its name, identity servers and DHT seeds (each `host:port`)."""

    name: str
    identity_servers: list[str] = field(default_factory=list)
    dht_seeds: list[str] = field(default_factory=list)
    ledger_seeds: list[str] = field(default_factory=list)
    foundation_miners: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "identity_servers": self.identity_servers, "dht_seeds": self.dht_seeds,
                "ledger_seeds": self.ledger_seeds, "foundation_miners": self.foundation_miners}

    @staticmethod
    def parse(doc: Any) -> "NetworkConfig":
        """Validate a decoded document; raises `InvalidArgumentError` with what is wrong."""
        if not isinstance(doc, dict):
            raise InvalidArgumentError("network configuration must be a JSON object", reason="invalid_network")
        name = doc.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidArgumentError("network configuration needs a name of letters, digits, _ . -",
                                       reason="invalid_network")
        lists: dict[str, list[str]] = {}
        for key in ("identity_servers", "dht_seeds", "ledger_seeds"):
            value = doc.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and HOSTPORT_RE.match(v) for v in value):
                raise InvalidArgumentError(f"{key} must be a list of host:port", reason="invalid_network")
            lists[key] = value
        miners = doc.get("foundation_miners", [])
        if not isinstance(miners, list) or not all(isinstance(v, str) and ADDRESS_RE.match(v) for v in miners):
            raise InvalidArgumentError("foundation_miners must be a list of wallet addresses", reason="invalid_network")
        return NetworkConfig(name, lists["identity_servers"], lists["dht_seeds"], lists["ledger_seeds"], miners)


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def save(networks_dir: Path, network: NetworkConfig) -> None:
    atomic_write(networks_dir / f"{network.name}.json", codec.dumps(network.to_dict()))


def load(networks_dir: Path, name: str) -> NetworkConfig:
    """The stored configuration `name`; raises `NotFoundError` (reason `network_not_found`)."""
    if not NAME_RE.match(name or ""):
        raise NotFoundError(f"network {name!r} was not found", reason="network_not_found")
    try:
        return NetworkConfig.parse(codec.loads((networks_dir / f"{name}.json").read_bytes()))
    except FileNotFoundError:
        raise NotFoundError(f"network {name!r} was not found", reason="network_not_found") from None


def load_selected(networks_dir: Path, selected: str) -> NetworkConfig | None:
    """The active configuration, or None when none is selected or it is gone."""
    if not selected:
        return None
    try:
        return load(networks_dir, selected)
    except (NotFoundError, InvalidArgumentError, ValueError):
        return None
