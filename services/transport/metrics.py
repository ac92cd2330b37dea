"""The transport process's samples for `GET /metrics` (`common.metrics`), read from what it keeps.

Packet counters come from `PacketStats` (by command, and refusals by reason), connections from
the transports' links, peers from the presence machines; nothing is labelled by peer.
"""

from __future__ import annotations

from typing import Any

from common.metrics import Samples

DIRECTIONS = (("in", "incoming"), ("out", "outgoing"))


def transport_samples(gateway: Any) -> Samples:
    """Samples of the `bitdust_transport_*` and `bitdust_peers` metrics of one transport gateway."""
    stats = gateway.stats
    samples: Samples = {"bitdust_transport_bytes_total": [], "bitdust_transport_packets_total": [],
                        "bitdust_transport_failures_total": [], "bitdust_transport_connections": [],
                        "bitdust_transport_send_failures_total": [({"command": command}, count) for command, count
                                                                  in sorted(stats.outgoing.failed_commands.items())],
                        "bitdust_peers": []}
    for direction, attr in DIRECTIONS:
        side = getattr(stats, attr)
        samples["bitdust_transport_bytes_total"].append(({"direction": direction}, side.total_bytes))
        samples["bitdust_transport_packets_total"] += [
            ({"direction": direction, "command": command}, count) for command, count in sorted(side.commands.items())]
        samples["bitdust_transport_failures_total"] += [
            ({"direction": direction, "reason": reason}, count) for reason, count in sorted(side.dropped.items())]
    links: dict[str, int] = {}
    for transport in gateway.transports:
        links[transport.proto] = links.get(transport.proto, 0) + len(transport.links())
    samples["bitdust_transport_connections"] = [({"protocol": p}, n) for p, n in sorted(links.items())]
    peers: dict[str, int] = {}
    for _, state in gateway.presence.items():
        peers[state] = peers.get(state, 0) + 1
    samples["bitdust_peers"] = [({"state": s}, n) for s, n in sorted(peers.items())]
    return samples
