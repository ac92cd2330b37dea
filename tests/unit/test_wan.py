"""The user-space WAN emulator's forwarding rules (deploy/wan.py), without devices."""

from __future__ import annotations

import random

from deploy.wan import Wan


def _packet(dst: str, body: bytes = b"x") -> bytes:
    header = bytearray(20)
    header[0] = 0x45
    header[16:20] = bytes(int(part) for part in dst.split("."))
    return bytes(header) + body


def test_packets_wait_their_delay_and_keep_their_order():
    wan = Wan(delay_ms=50, loss_percent=0)
    wan.attach("10.0.0.1", 11)
    wan.attach("10.0.0.2", 12)
    wan.accept(_packet("10.0.0.2", b"a"), now=100.0)
    wan.accept(_packet("10.0.0.1", b"b"), now=100.01)
    assert wan.due(100.049) == []
    assert wan.due(100.05) == [(12, _packet("10.0.0.2", b"a"))]
    assert wan.due(101.0) == [(11, _packet("10.0.0.1", b"b"))]


def test_unknown_destinations_and_non_ipv4_are_not_forwarded():
    wan = Wan(delay_ms=0, loss_percent=0)
    wan.attach("10.0.0.1", 11)
    wan.accept(_packet("10.0.0.9"), now=1.0)
    wan.accept(b"\x60" + bytes(39), now=1.0)  # IPv6
    wan.accept(b"\x45", now=1.0)  # truncated
    assert wan.due(2.0) == [] and wan.dropped == 1


def test_the_loss_rate_is_kept():
    wan = Wan(delay_ms=0, loss_percent=1, rng=random.Random(7))
    wan.attach("10.0.0.1", 11)
    for _ in range(20_000):
        wan.accept(_packet("10.0.0.1"), now=0.0)
    lost = 20_000 - len(wan.due(1.0))
    assert 120 <= lost <= 280 and lost == wan.dropped
