"""The sealed form of a private message, as it travels in a `Message` packet's JSON payload.

    {"v": 1, "msg_type": "private_message", "message_id": "private_…", "sender": <IDURL>,
     "recipient": <IDURL>, "time": <unix seconds>,
     "key": b64(RSA-OAEP(recipient's master public key, K)),  K: a fresh AES-256 key per sealing
     "body": b64(AES-256-GCM(K, JSON data, aad = canonical JSON of the header fields))}

The header travels in clear (the recipient needs it to route and dedupe) but is bound to the body
as associated data, so it cannot be altered without the body failing to open. Who sent it is
proven by the packet signature the transport checked; `check_header` makes the recipient insist
that the header's sender is the packet's creator and the header's recipient is itself.

A group message (`msg_type` "group_message", `recipient` the group key id) carries one more
field, `"signature"`: b64 RSA-PSS of `signed_bytes(...)` by the sender's master key. Anyone who
holds the group's *public* key (every broker) can seal a message to the group, and the AEAD only
proves the sealer knew that key, so the signature is what proves the sender: it covers the whole
header (type, id, sender, group, time) and the wrapped key and ciphertext, which fix the
plaintext for the group key. Brokers and members check it; members drop what fails.

Pure functions: the identity process seals and opens (`identity.seal`, `identity.open`), so the
private half never leaves it and the messaging process loads no cipher.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from common import codec
from common.rsa_public import CryptoError, b64, unb64

VERSION = 1
MESSAGE_TYPES = ("private_message", "group_message", "personal_message")
GROUP_SIGNATURE_DOMAIN = b"bitdust-group-message:"
MAX_CLOCK_AHEAD = 600.0
"""Seconds a message's time may be ahead of ours (clock skew) before it is refused."""


class EnvelopeError(Exception):
    """A sealed message that cannot be accepted; `reason` is the stable code it is counted under."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """What is known of a message without opening it."""

    msg_type: str
    message_id: str
    sender: str
    recipient: str
    time: float

    def aad(self) -> bytes:
        """The associated data that binds the header to the ciphertext (canonical JSON)."""
        return codec.dumps({"v": VERSION, **asdict(self)})


@dataclass(frozen=True)
class Sealed:
    """A parsed sealed message: the header, the wrapped session key and the ciphertext."""

    header: Header
    wrapped_key: bytes
    body: bytes
    signature: bytes = b""
    """The sender's signature of `signed_bytes` (group messages; empty when absent)."""

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.header, self.wrapped_key, self.body)

    def digest(self) -> str:
        """sha256 (hex) of everything the message is: what a broker's chain link names."""
        return hashlib.sha256(self.signed_bytes() + b"\x00" + self.signature).hexdigest()


def new_message_id(prefix: str = "private") -> str:
    """A fresh message id in the reference form `private_<digits>`."""
    return f"{prefix}_{time.time_ns() // 1000}{secrets.randbelow(10**6):06d}"


def sealed_payload(header: Header, wrapped_key: bytes, body: bytes, signature: bytes = b"") -> dict[str, Any]:
    """The JSON payload of a message sealed with `header.aad()` bound to its body (and signed, for groups)."""
    payload = {"v": VERSION, **asdict(header), "key": b64(wrapped_key), "body": b64(body)}
    if signature:
        payload["signature"] = b64(signature)
    return payload


def signed_bytes(header: Header, wrapped_key: bytes, body: bytes) -> bytes:
    """What the sender of a group message signs: its header, wrapped key and ciphertext, in a fixed order."""
    return GROUP_SIGNATURE_DOMAIN + codec.dumps(
        {"v": VERSION, **asdict(header), "key": b64(wrapped_key), "body": b64(body)})


def parse(payload: Any) -> Sealed:
    """Strictly decode a sealed message; raises `EnvelopeError("malformed")`."""
    if not isinstance(payload, dict) or payload.get("v") != VERSION:
        raise EnvelopeError("malformed", "not a sealed message of a known version")
    try:
        header = Header(
            msg_type=_text(payload, "msg_type"), message_id=_text(payload, "message_id"),
            sender=_text(payload, "sender"), recipient=_text(payload, "recipient"),
            time=float(payload["time"]),
        )
        wrapped = unb64(_text(payload, "key", 4096))
        body = unb64(_text(payload, "body", 4 * 1024 * 1024))
        signature = unb64(_text(payload, "signature", 4096)) if "signature" in payload else b""
    except (KeyError, TypeError, ValueError, CryptoError):
        raise EnvelopeError("malformed", "sealed message fields are missing or ill-formed") from None
    if header.msg_type not in MESSAGE_TYPES:
        raise EnvelopeError("malformed", f"unknown message type {header.msg_type[:40]!r}")
    return Sealed(header, wrapped, body, signature)


def check_header(header: Header, creator_idurl: str, my_idurl: str, now: float, max_age: float) -> None:
    """Refuse a message not from the packet's creator, not for us, or out of its time window."""
    if header.sender != creator_idurl:
        raise EnvelopeError("forged_sender", "the message names another sender than the packet's creator")
    if header.recipient != my_idurl:
        raise EnvelopeError("wrong_recipient", "the message is not addressed to this node")
    if header.time > now + MAX_CLOCK_AHEAD:
        raise EnvelopeError("bad_time", "the message is dated in the future")
    if header.time < now - max_age - MAX_CLOCK_AHEAD:
        raise EnvelopeError("expired", "the message is older than its time to live")


def decode_body(plain: bytes) -> dict[str, Any]:
    """The data of an opened body; raises `EnvelopeError("malformed")`."""
    try:
        data = codec.loads(plain)
    except ValueError:
        raise EnvelopeError("malformed", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise EnvelopeError("malformed", "the body is not a JSON object")
    return data


def _text(payload: dict[str, Any], name: str, limit: int = 512) -> str:
    value = payload[name]
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(name)
    return value
