"""Who is online: one `contact_status` machine per peer, with the reference engine's states.

    OFFLINE --outbox-packet--> PING? --inbox-packet / link-up--> CONNECTED
    CONNECTED --ack-timeout--> ACK? --inbox-packet--> CONNECTED
    any --sent-failed / connection-lost / (ack-timeout from PING? or ACK?)--> OFFLINE
"""

from __future__ import annotations

from typing import Callable, ClassVar

from common.automat import Automat, AutomatRegistry

CONNECTED = "CONNECTED"
OFFLINE = "OFFLINE"
PING = "PING?"
ACK = "ACK?"

PresenceObserver = Callable[[str, str, str], None]
"""Called with (idurl, old_state, new_state) on every change."""


class ContactStatus(Automat):
    """The on-line state of one peer, driven by what the transport sees."""

    initial: ClassVar[str] = OFFLINE
    transitions: ClassVar[dict[tuple[str, str], str]] = {
        (OFFLINE, "outbox-packet"): PING,
        (OFFLINE, "inbox-packet"): CONNECTED,
        (OFFLINE, "link-up"): CONNECTED,
        (PING, "inbox-packet"): CONNECTED,
        (PING, "link-up"): CONNECTED,
        (PING, "ack-timeout"): OFFLINE,
        (PING, "sent-failed"): OFFLINE,
        (PING, "connection-lost"): OFFLINE,
        (CONNECTED, "ack-timeout"): ACK,
        (CONNECTED, "sent-failed"): OFFLINE,
        (CONNECTED, "connection-lost"): OFFLINE,
        (ACK, "inbox-packet"): CONNECTED,
        (ACK, "ack-timeout"): OFFLINE,
        (ACK, "sent-failed"): OFFLINE,
        (ACK, "connection-lost"): OFFLINE,
    }


MAX_PEERS = 10_000
"""Presence machines kept at once."""


class PresenceBook:
    """The `contact_status` machines of every peer we have dealt with."""

    def __init__(self, automats: AutomatRegistry | None, observer: PresenceObserver | None = None):
        self._automats = automats
        self._observer = observer
        self._machines: dict[str, ContactStatus] = {}

    def fire(self, idurl: str, event: str) -> str:
        """Feed `event` to the peer's machine (created on first use); return its new state."""
        machine = self._machines.get(idurl)
        if machine is None:
            self._make_room()
            machine = ContactStatus(f"contact_status_{idurl}", self._automats, name="contact_status")
            self._machines[idurl] = machine
        old = machine.state
        new = machine.fire(event)
        if new != old and self._observer is not None:
            self._observer(idurl, old, new)
        return new

    def _make_room(self) -> None:
        """At most `MAX_PEERS` machines: the oldest ones not CONNECTED go first (peers can mint identities)."""
        if len(self._machines) < MAX_PEERS:
            return
        for idurl, machine in list(self._machines.items()):
            if machine.state != CONNECTED:
                machine.close()
                del self._machines[idurl]
                if len(self._machines) < MAX_PEERS:
                    return

    def state(self, idurl: str) -> str | None:
        machine = self._machines.get(idurl)
        return machine.state if machine else None

    def items(self) -> list[tuple[str, str]]:
        return [(idurl, m.state) for idurl, m in self._machines.items()]

    def close(self) -> None:
        for machine in self._machines.values():
            machine.close()
        self._machines.clear()
