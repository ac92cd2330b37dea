"""Counters behind `packets_stats`, in the reference engine's shape plus per-command counts."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any


class _Direction:
    def __init__(self) -> None:
        self.total_bytes = 0
        self.total_packets = 0
        self.failed_packets = 0
        self.unknown_bytes = 0
        self.unknown_packets = 0
        self.peers: defaultdict[str, int] = defaultdict(int)
        self.commands: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.failed_commands: Counter[str] = Counter()
        """Packets that could not go out, by command (outgoing only: a refused arrival has none yet)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_bytes": self.total_bytes,
            "total_packets": self.total_packets,
            "failed_packets": self.failed_packets,
            "unknown_bytes": self.unknown_bytes,
            "unknown_packets": self.unknown_packets,
            "peers": dict(self.peers),
            "commands": dict(self.commands),
            "dropped": dict(self.dropped),
        }


class PacketStats:
    """What crossed the network, in and out."""

    def __init__(self) -> None:
        self.incoming = _Direction()
        self.outgoing = _Direction()

    def received(self, idurl: str, size: int, command: str) -> None:
        self.incoming.total_bytes += size
        self.incoming.total_packets += 1
        self.incoming.peers[idurl] += size
        self.incoming.commands[command] += 1

    def dropped(self, reason: str, size: int, known_sender: bool) -> None:
        """An arriving frame or packet refused for `reason` (a stable code)."""
        self.incoming.failed_packets += 1
        self.incoming.dropped[reason] += 1
        if not known_sender:
            self.incoming.unknown_packets += 1
            self.incoming.unknown_bytes += size

    def sent(self, idurl: str, size: int, command: str) -> None:
        self.outgoing.total_bytes += size
        self.outgoing.total_packets += 1
        self.outgoing.peers[idurl] += size
        self.outgoing.commands[command] += 1

    def send_failed(self, reason: str, command: str = "") -> None:
        self.outgoing.failed_packets += 1
        self.outgoing.dropped[reason] += 1
        if command:
            self.outgoing.failed_commands[command] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"in": self.incoming.as_dict(), "out": self.outgoing.as_dict()}
