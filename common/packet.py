"""The signed packet nodes exchange: fields, signing digest, wire encoding, arrival checks.

Pure code over bytes (no I/O). The wire form is a fixed prefix, a small JSON header and the raw
payload, so a data fragment of several MiB crosses the network without base64 and without being
copied: `encode` returns the parts for `writelines`, `decode` returns a payload that is a
`memoryview` into the received buffer.

    prefix  = b"BDP1" | header length (uint32 BE) | payload length (uint32 BE)
    header  = JSON {"c": command, "o": owner, "cr": creator, "id": packet id, "r": remote,
                    "k": key id, "d": date (unix seconds, float), "b": payload is binary,
                    "s": signature (base64)}
    payload = raw bytes (JSON text of a value unless "b" is true)

The signature is RSA-PSS over `signing_digest`: SHA-256 of every field, length-prefixed, and of
the payload's own SHA-256 (`payload_digest`), so no field can be altered or moved into another
without breaking it. Signing over the payload hash lets each side hash a payload of several MiB
once (off the event loop) and hand that hash on with the payload instead of hashing it again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import struct
import time
from dataclasses import dataclass, field, replace
from typing import Union

from common import codec

Buffer = Union[bytes, bytearray, memoryview]

MAGIC = b"BDP1"
PREFIX = struct.Struct(">4sII")
MAX_HEADER_SIZE = 16 * 1024
MAX_BLOCK_SIZE = 16 * 1024 * 1024
"""The largest storage block; with one data share its fragment is the block plus a 16-byte GCM tag."""
MAX_PAYLOAD_SIZE = MAX_BLOCK_SIZE + 16 * 1024
"""The largest packet payload: a fragment of the largest block, with room to spare."""
MAX_FIELD_LENGTH = 1024
MAX_CLOCK_SKEW = 600.0
"""Packets dated further than this from our clock (seconds) are refused as stale."""

COMMANDS = frozenset({
    "Data", "Retrieve", "Ack", "Fail", "Identity", "Message", "ListFiles", "Files", "DeleteFile",
    "DeleteBackup", "RequestService", "CancelService", "Key", "AuditKey", "Event", "Contacts", "Relay",
    "Coin", "RetrieveCoin",
})
"""The reference engine's packet commands; a ping is an Identity packet answered by Ack."""

REPLY_COMMANDS = frozenset({"Ack", "Fail"})

_DOMAIN = b"bitdust-packet-v2\x00"
_LEN = struct.Struct(">I")
_LEN64 = struct.Struct(">Q")


class PacketError(ValueError):
    """A frame that is not a well-formed, acceptable packet; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Packet:
    """One signed packet; `payload` may be a memoryview into the frame it arrived in."""

    command: str
    owner_idurl: str
    creator_idurl: str
    packet_id: str
    remote_idurl: str
    key_id: str
    date: float
    payload: Buffer = b""
    binary: bool = False
    signature: bytes = field(default=b"", repr=False)
    payload_sha256: bytes | None = field(default=None, repr=False, compare=False)
    """`payload_digest(payload)` once someone computed it; not on the wire and not trusted from it."""

    def summary(self) -> str:
        """A log-safe description (never the payload)."""
        return f"{self.command}({self.packet_id}) {self.creator_idurl} -> {self.remote_idurl}"

    def signed(self, signature: bytes) -> "Packet":
        return replace(self, signature=signature)

    def hashed(self, payload_sha256: bytes) -> "Packet":
        """The same packet with its payload hash attached, so later steps need not rehash."""
        return replace(self, payload_sha256=payload_sha256)


def new_packet_id() -> str:
    """A packet id unique enough to match replies: time prefix plus random digits."""
    return f"{int(time.time() * 1000) % 10**9}{secrets.randbelow(10**12):012d}"


def create(command: str, creator_idurl: str, remote_idurl: str, payload: Buffer, *, key_id: str,
           packet_id: str | None = None, owner_idurl: str | None = None, binary: bool = False,
           date: float | None = None, payload_sha256: bytes | None = None) -> Packet:
    """An unsigned packet; sign `signing_digest(packet)` and attach it with `Packet.signed`.

    `payload_sha256`, when the caller already knows it, is kept on the packet (see `Packet.hashed`).
    """
    if command not in COMMANDS:
        raise PacketError("unknown_command", command)
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise PacketError("payload_too_large", f"{len(payload)} bytes")
    return Packet(command=command, owner_idurl=owner_idurl or creator_idurl, creator_idurl=creator_idurl,
                  packet_id=packet_id or new_packet_id(), remote_idurl=remote_idurl, key_id=key_id,
                  date=time.time() if date is None else float(date), payload=payload, binary=binary,
                  payload_sha256=payload_sha256)


def payload_digest(payload: Buffer) -> bytes:
    """SHA-256 of a payload (32 bytes): what `signing_digest` covers in place of the payload."""
    return hashlib.sha256(payload).digest()


def signing_digest(packet: Packet, payload_sha256: bytes | None = None) -> bytes:
    """SHA-256 over every field and the payload's hash: what the creator signs.

    `payload_sha256` is `payload_digest(packet.payload)` when the caller already computed it; it is
    never taken from the packet implicitly, so whoever passes it vouches for it.
    """
    if payload_sha256 is None:
        payload_sha256 = payload_digest(packet.payload)
    elif len(payload_sha256) != hashlib.sha256().digest_size:
        raise ValueError("payload_sha256 must be 32 bytes")
    digest = hashlib.sha256(_DOMAIN)
    for text in (packet.command, packet.owner_idurl, packet.creator_idurl, packet.packet_id,
                 packet.remote_idurl, packet.key_id, repr(float(packet.date)), "b" if packet.binary else "j"):
        raw = text.encode()
        digest.update(_LEN.pack(len(raw)))
        digest.update(raw)
    digest.update(_LEN64.pack(len(packet.payload)))
    digest.update(payload_sha256)
    return digest.digest()


def encode(packet: Packet) -> list[Buffer]:
    """The wire parts of a signed packet (prefix, header, payload), for `writelines`."""
    header = codec.dumps({
        "c": packet.command, "o": packet.owner_idurl, "cr": packet.creator_idurl, "id": packet.packet_id,
        "r": packet.remote_idurl, "k": packet.key_id, "d": float(packet.date), "b": packet.binary,
        "s": base64.b64encode(packet.signature).decode(),
    })
    return [PREFIX.pack(MAGIC, len(header), len(packet.payload)), header, packet.payload]


def encoded_size(parts: list[Buffer]) -> int:
    return sum(len(part) for part in parts)


def decode(frame: Buffer) -> Packet:
    """Parse one packet from a whole frame; raises `PacketError` on anything malformed."""
    view = memoryview(frame)
    if len(view) < PREFIX.size:
        raise PacketError("malformed", "frame shorter than the packet prefix")
    magic, header_len, payload_len = PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise PacketError("malformed", "bad magic")
    if header_len > MAX_HEADER_SIZE or payload_len > MAX_PAYLOAD_SIZE:
        raise PacketError("oversized")
    if PREFIX.size + header_len + payload_len != len(view):
        raise PacketError("malformed", "lengths do not match the frame")
    try:
        header = codec.loads(bytes(view[PREFIX.size:PREFIX.size + header_len]))
    except ValueError:
        raise PacketError("malformed", "header is not JSON") from None
    if not isinstance(header, dict):
        raise PacketError("malformed", "header is not an object")
    texts = {}
    for key in ("c", "o", "cr", "id", "r", "k"):
        value = header.get(key)
        if not isinstance(value, str) or len(value) > MAX_FIELD_LENGTH:
            raise PacketError("malformed", f"field {key}")
        texts[key] = value
    if texts["c"] not in COMMANDS:
        raise PacketError("unknown_command", texts["c"][:40])
    date, binary, signature = header.get("d"), header.get("b"), header.get("s")
    if isinstance(date, bool) or not isinstance(date, (int, float)) or not isinstance(binary, bool):
        raise PacketError("malformed", "date or binary flag")
    if not isinstance(signature, str) or len(signature) > 2048:
        raise PacketError("malformed", "signature")
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise PacketError("malformed", "signature is not base64") from None
    return Packet(command=texts["c"], owner_idurl=texts["o"], creator_idurl=texts["cr"], packet_id=texts["id"],
                  remote_idurl=texts["r"], key_id=texts["k"], date=float(date),
                  payload=view[PREFIX.size + header_len:], binary=binary, signature=sig)


def check_fresh(packet: Packet, now: float | None = None, max_skew: float = MAX_CLOCK_SKEW) -> None:
    """Raise `PacketError("stale")` when the packet's date is too far from `now`."""
    current = time.time() if now is None else now
    if abs(current - packet.date) > max_skew:
        raise PacketError("stale", f"dated {current - packet.date:+.0f}s ago")
