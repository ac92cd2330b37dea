"""DHT layers: key namespaces for the kinds of users a node looks for.

Layer ids are the reference engine's. All layers share one Kademlia overlay (one UDP port);
a layer is a namespace of keys (`records.storage_key` puts the layer id in every key) plus a
member list: nodes attached to a layer announce themselves with an entry they sign, merged into
one of the layer's member buckets (see `members`), and `dht_user_random(layer_id)` picks live
users from the entries whose signatures check out.
"""

from __future__ import annotations

from typing import Callable

DEFAULT = 0
ID_SERVERS = 1
PROXY_ROUTERS = 2
SUPPLIERS = 3
REBUILDERS = 4
BROADCASTERS = 5
MERCHANTS = 6
MESSAGE_BROKERS = 7
CUSTOMERS = 8

NAMES: dict[int, str] = {
    DEFAULT: "DEFAULT",
    ID_SERVERS: "ID_SERVERS",
    PROXY_ROUTERS: "PROXY_ROUTERS",
    SUPPLIERS: "SUPPLIERS",
    REBUILDERS: "REBUILDERS",
    BROADCASTERS: "BROADCASTERS",
    MERCHANTS: "MERCHANTS",
    MESSAGE_BROKERS: "MESSAGE_BROKERS",
    CUSTOMERS: "CUSTOMERS",
}

SERVICE_LAYERS: dict[str, int] = {
    "services/supplier/enabled": SUPPLIERS,
    "services/customer/enabled": CUSTOMERS,
    "services/message-broker/enabled": MESSAGE_BROKERS,
    "services/identity-server/enabled": ID_SERVERS,
    "services/proxy-server/enabled": PROXY_ROUTERS,
}
"""The option that switches a service on, and the layer a node running it announces itself on."""

MEMBER_TTL = 300.0
"""A member entry lives this long; attached nodes announce again well before (ANNOUNCE_INTERVAL)."""
ANNOUNCE_INTERVAL = 90.0


def parse_layer_list(text: str) -> set[int]:
    """Layer ids from the `attached-layers` option (`"3,7"`); junk items are ignored."""
    found: set[int] = set()
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if item.isdigit():
            found.add(int(item))
    return found


def attached_layers(get_option: Callable[[str], object]) -> set[int]:
    """The layers this node announces itself on: the default layer, its services', the option's."""
    layers = {DEFAULT}
    for key, layer in SERVICE_LAYERS.items():
        try:
            if get_option(key) is True:
                layers.add(layer)
        except Exception:  # noqa: BLE001 - an option missing from the schema means "not running"
            continue
    layers |= parse_layer_list(str(get_option("services/entangled-dht/attached-layers") or ""))
    return layers


def check_layer_id(value: object) -> int:
    """A layer id from an API parameter (int or digits); raises `ValueError`."""
    if isinstance(value, bool):
        raise ValueError(value)
    if not isinstance(value, (str, int, float)):
        raise ValueError(value)
    layer = int(value.strip()) if isinstance(value, str) else int(value)
    if layer < 0 or layer > 255:
        raise ValueError(value)
    return layer
