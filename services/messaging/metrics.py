"""The messaging process's samples for `GET /metrics` (`common.metrics`), read from its counters.

Arriving packets by kind (private, group, broker) and result (`accepted`, or the stable reason
they were dropped for, `replayed` for a duplicate), and the history by direction and state.
"""

from __future__ import annotations

from typing import Any

from common.metrics import Labels, Samples


def messaging_samples(service: Any) -> Samples:
    """Samples of `bitdust_messages_received_total` and `bitdust_messages` of a messaging service."""
    received: list[tuple[Labels, float]] = []
    for kind, accepted, dropped in (("private", service.inbox.received, service.inbox.dropped),
                                    ("group", service.groups.received, service.groups.dropped),
                                    ("broker", service.broker.accepted, service.broker.dropped)):
        received.append(({"kind": kind, "result": "accepted"}, accepted))
        received += [({"kind": kind, "result": reason}, count) for reason, count in sorted(dropped.items())]
    history: list[tuple[Labels, float]] = []
    for key, count in sorted(service.store.counts().items()):
        direction, _, state = key.partition("_")
        history.append(({"direction": direction, "state": state}, count))
    return {"bitdust_messages_received_total": received, "bitdust_messages": history}
