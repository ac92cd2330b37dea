"""Every bus subject of the node, defined here and nowhere else."""

from __future__ import annotations

PROCESSES = ("identity", "dht", "transport", "storage", "messaging", "ledger", "api")
"""The Python processes of a node, in start order; `bus` (nats-server) comes before them."""


def api(process: str, method: str) -> str:
    """Request/reply subject of one API method served by `process`."""
    return f"api.{process}.{method}"


def internal(process: str, verb: str) -> str:
    """Request/reply subject of an internal call between processes."""
    return f"{process}.{verb}"


def inbox(command: str) -> str:
    """Packets of `command` that arrived from other nodes."""
    return f"inbox.{command}"


INBOX_ALL = "inbox.>"


def event(event_id: str) -> str:
    """A fire-and-forget event."""
    return f"evt.{event_id}"


EVENTS_ALL = "evt.>"


def model(name: str) -> str:
    """A model update for WebSocket listeners."""
    return f"model.{name}"


MODELS_ALL = "model.>"

CONFIG_CHANGED_EVENT = "config-changed"

DHT_LAYER_CONNECTED_EVENT = "dht-layer-connected"
"""Published by the dht process when a layer gets peers: {"layer_id", "dht_id"}."""
