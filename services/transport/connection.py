"""The life of one TCP connection, as an explicit machine the `automats_list` can show.

    AT_STARTUP --connection-made--> HANDSHAKE --authenticated--> CONNECTED
    any --handshake-failed / connection-lost--> CLOSED
"""

from __future__ import annotations

from typing import ClassVar

from common.automat import Automat


class ConnectionMachine(Automat):
    """State of one TCP connection (incoming or outgoing)."""

    initial: ClassVar[str] = "AT_STARTUP"
    transitions: ClassVar[dict[tuple[str, str], str]] = {
        ("AT_STARTUP", "connection-made"): "HANDSHAKE",
        ("HANDSHAKE", "authenticated"): "CONNECTED",
        ("HANDSHAKE", "handshake-failed"): "CLOSED",
        ("*", "connection-lost"): "CLOSED",
    }

    @property
    def is_open(self) -> bool:
        return self.state in ("HANDSHAKE", "CONNECTED")
