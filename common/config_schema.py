"""The one schema of node options: key, type, default, label, bounds and possible values.

Keys follow the reference engine (`interface/api/rest-http-port`, `services/customer/suppliers-number`, …).
`validate` turns a value given by a client (JSON value or query-string text) into the typed value
or raises `InvalidArgumentError` with a reason that says what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidArgumentError, NotFoundError
from common.services_catalog import CATALOG

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_SIZE_UNITS = {"": 1, "b": 1, "kb": KIB, "kib": KIB, "mb": MIB, "mib": MIB, "gb": GIB, "gib": GIB, "tb": GIB * 1024}


@dataclass(frozen=True)
class Option:
    """One configurable option."""

    key: str
    type: str
    default: Any
    label: str = ""
    min: int | None = None
    max: int | None = None
    possible: tuple[Any, ...] | None = None
    readonly: bool = False

    def describe(self, value: Any) -> dict[str, Any]:
        """The reference engine's option description with its current value."""
        info: dict[str, Any] = {
            "key": self.key,
            "type": self.type,
            "label": self.label or self.key.rsplit("/", 1)[-1],
            "readonly": self.readonly,
            "default": _reference_default(self),
            "value": value,
        }
        if self.min is not None:
            info["min"] = self.min
        if self.max is not None:
            info["max"] = self.max
        if self.possible is not None:
            info["possible_values"] = list(self.possible)
        return info

    def help(self) -> str:
        """A sentence on what the option takes: the `info` that `include_info` adds."""
        parts = [f"{self.label or self.key.rsplit('/', 1)[-1]}: {self.type}"]
        if self.possible is not None:
            parts.append("one of " + ", ".join(str(v) for v in self.possible))
        elif self.min is not None or self.max is not None:
            low = "-" if self.min is None else self.min
            high = "-" if self.max is None else self.max
            parts.append(f"from {low} to {high}")
        parts.append(f"default {_reference_default(self)!s}" if self.default != "" else "empty by default")
        if self.readonly:
            parts.append("read only")
        return "; ".join(parts)


def _reference_default(option: Option) -> Any:
    # The reference engine reports boolean defaults as text; clients compare against that.
    if option.type == "boolean":
        return "true" if option.default else "false"
    return option.default


def _port(key: str, default: int, label: str = "") -> Option:
    return Option(key, "port number", default, label, min=1, max=65535)


def _flag(key: str, default: bool, label: str = "") -> Option:
    return Option(key, "boolean", default, label)


def _text(key: str, default: str = "", label: str = "") -> Option:
    return Option(key, "text", default, label)


def _size(key: str, default: int, label: str = "") -> Option:
    return Option(key, "disk space", default, label, min=0)


_BASE: tuple[Option, ...] = (
    _flag("interface/api/auth-secret-enabled", True),
    _flag("interface/api/rest-http-enabled", True),
    _port("interface/api/rest-http-port", 8180),
    _flag("interface/api/web-socket-enabled", True),
    _port("interface/api/web-socket-port", 8280),
    _flag("interface/api/legacy-status-codes", False,
          "answer every REST envelope, errors included, with HTTP 200 as the reference engine does"),
    _port("interface/bus/port", 8380, "local bus (nats-server) port"),
    _flag("interface/bus/share-cpu-with-api", True,
          "run the bus and the API gateway on one shared CPU: faster API calls (takes effect at node start)"),
    _flag("interface/ftp/enabled", False),
    _port("interface/ftp/port", 8021),
    _flag("logs/api-enabled", False, "log API calls"),
    _flag("logs/automat-transitions-enabled", False, "log state machines transitions"),
    _flag("logs/automat-events-enabled", False, "log state machines events"),
    Option("logs/debug-level", "positive integer", 0, "debug level", min=0, max=20),
    _flag("logs/packet-enabled", False, "log network packets"),
    _flag("logs/stream-enabled", False),
    Option("paths/backups", "directory path", "", "local backups location"),
    Option("paths/customers", "directory path", "", "customers data location"),
    Option("paths/messages", "directory path", "", "messages location"),
    Option("paths/receipts", "directory path", "", "receipts location"),
    Option("paths/restore", "directory path", "", "restored files location"),
    _text("personal/name"),
    _text("personal/surname"),
    _text("personal/nickname"),
    _flag("personal/betatester", False),
    Option("personal/private-key-size", "selection", 2048, "private key size", possible=(1024, 2048, 3072, 4096)),
    Option("services/backups/block-size", "disk space", 16 * MIB, "preferred block size", min=64 * KIB,
           max=16 * MIB),
    Option("services/backups/max-block-size", "disk space", 16 * MIB, "maximum block size", min=64 * KIB,
           max=16 * MIB),
    Option("services/backups/max-copies", "positive integer", 2, "number of copies", min=1, max=100),
    _flag("services/backups/keep-local-copies-enabled", False),
    _flag("services/backups/wait-suppliers-enabled", True),
    Option(
        "services/customer/suppliers-number", "selection", 2, "number of suppliers",
        possible=(2, 4, 7, 13, 18, 26, 64),
    ),
    _size("services/customer/needed-space", 1 * GIB, "needed space"),
    _size("services/supplier/donated-space", 8 * GIB, "donated space"),
    _flag("services/supplier/require-contract", False,
          "accept only customers with a current storage contract on the ledger, drop the data of overdue ones"),
    Option("services/supplier/overdue-grace", "positive integer", 24 * 3600,
           "seconds a customer's contract may stay overdue before its data is dropped", min=0, max=365 * 24 * 3600),
    Option("services/employer/replace-offline-after", "positive integer", 600,
           "seconds a supplier may stay OFFLINE before it is replaced", min=5, max=7 * 24 * 3600),
    _text("services/employer/candidates", "", "preferred suppliers for hiring (IDURLs, comma separated)"),
    Option("services/backups/upload-window", "positive integer", 8, "blocks an upload keeps in flight",
           min=1, max=32),
    _port("services/entangled-dht/udp-port", 14441, "UDP port number"),
    _text("services/entangled-dht/known-nodes", "", "seed nodes (host:port, comma separated)"),
    _text("services/entangled-dht/attached-layers", "", "attached DHT layers"),
    _text("services/entangled-dht/listen-host", "0.0.0.0", "address the DHT listens on (UDP)"),
    _port("services/tcp-connections/tcp-port", 7771, "tcp-port"),
    _text("services/tcp-connections/listen-host", "0.0.0.0", "address the TCP transport listens on"),
    _text("services/tcp-connections/external-host", "",
          "address other nodes reach this node at (empty: the listen address, else learned from a peer)"),
    _text("services/proxy-transport/preferred-routers", "",
          "relays to try first when this node is behind NAT (IDURLs, comma separated)"),
    _port("services/udp-datagrams/udp-port", 8882, "udp-port"),
    _text("services/identity-server/host", "127.0.0.1", "identity server host name"),
    _text("services/identity-server/listen-host", "0.0.0.0", "address the identity server listens on"),
    _port("services/identity-server/web-port", 8084, "identity server HTTP port"),
    _text("services/identity-propagate/known-servers", "", "known identity servers (host:port, comma separated)"),
    _text("services/identity-propagate/preferred-servers", "",
          "identity servers to create the identity on and rotate to first (host:port, comma separated)"),
    _flag("services/identity-propagate/automatic-rotate-enabled", True,
          "move the identity to another known server when its primary server stays unreachable"),
    _port("services/bismuth-node/p2p-port", 19444, "blockchain engine (ledgerd) peer port"),
    _port("services/bismuth-node/rpc-port", 19443, "blockchain engine (ledgerd) RPC port, on 127.0.0.1"),
    _text("services/bismuth-node/listen-host", "0.0.0.0", "address the blockchain engine listens on for peers"),
    _text("services/bismuth-node/whitelist", "127.0.0.1",
          "networks whose engines relay to this one at once (address or address/bits, comma separated)"),
    _flag("services/bismuth-node/auto-produce", True,
          "a foundation miner produces a block as soon as transactions wait in its engine's pool"),
    _text("services/network/selected", "", "selected network configuration"),
    Option("services/private-messages/message-ttl", "positive integer", 60 * 60 * 24 * 30,
           "seconds a sent message is kept for an offline recipient", min=1),
    Option("services/private-groups/broker-positions", "positive integer", 2,
           "message brokers a group creator hires (each keeps a copy of its groups' queues)", min=1, max=3),
)

OPTIONS: dict[str, Option] = {o.key: o for o in _BASE}
for _service in CATALOG:
    OPTIONS[_service.config_path] = _flag(_service.config_path, _service.enabled, "enabled")

GROUPS = ("interface", "logs", "paths", "personal", "services")


def option(key: str) -> Option:
    """The option for `key`; raises `NotFoundError` (reason `option_not_found`)."""
    found = OPTIONS.get(key.strip("/"))
    if found is None:
        raise NotFoundError(f"option {key} was not found", reason="option_not_found")
    return found


def parse_size(text: str) -> int:
    """Parse `4194304`, `4 MB`, `1.5GiB` into bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(text)
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def validate(key: str, value: Any) -> Any:
    """Return `value` converted to the option's type; raises `InvalidArgumentError`."""
    opt = option(key)
    if opt.readonly:
        raise InvalidArgumentError(f"option {key} is read-only", reason="option_readonly")
    try:
        typed = _convert(opt, value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"value {value!r} is not a valid {opt.type} for {key}", reason="invalid_value"
        ) from None
    if opt.min is not None and isinstance(typed, int) and typed < opt.min:
        raise InvalidArgumentError(f"value for {key} must be at least {opt.min}", reason="invalid_value")
    if opt.max is not None and isinstance(typed, int) and typed > opt.max:
        raise InvalidArgumentError(f"value for {key} must be at most {opt.max}", reason="invalid_value")
    if opt.possible is not None and typed not in opt.possible:
        allowed = ", ".join(str(v) for v in opt.possible)
        raise InvalidArgumentError(f"value for {key} must be one of {allowed}", reason="invalid_value")
    return typed


def _convert(opt: Option, value: Any) -> Any:
    if opt.type == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(value)
    if opt.type in ("port number", "positive integer", "selection") and isinstance(opt.default, int):
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    if opt.type == "disk space":
        if isinstance(value, bool):
            raise TypeError(value)
        return int(value) if isinstance(value, (int, float)) else parse_size(str(value))
    if isinstance(value, (dict, list)):
        raise TypeError(value)
    return "" if value is None else str(value)
