"""The connection handshake: both ends prove they hold their identity's key, the dialer first.

    dialer   -> HELLO {"v", "idurl": D, "nonce": nD, "to": L}
    listener -> HELLO {"v", "idurl": L, "nonce": nL}
    dialer   -> AUTH  {"sig": sign_D(transcript(D, L, nD, nL))}
    listener -> READY {"sig": sign_L(transcript(L, D, nL, nD))}

The listener signs only after the dialer's proof checks out, so a stranger who opens connections
pays an RSA signature for each before the listener spends one.

Each side signs the other's fresh nonce bound to both IDURLs and both nonces, so a signature
can be neither replayed on another connection nor relayed to a third node. Pure code: the
caller does the I/O, the signing (by the identity process) and the key look-ups.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any

from common import codec

PROTOCOL_VERSION = 1
NONCE_SIZE = 32
_DOMAIN = b"bitdust-handshake-v1\x00"
_LEN = struct.Struct(">I")


class HandshakeError(ValueError):
    """The other end broke the handshake; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Hello:
    """A parsed HELLO: who the sender claims to be, its challenge, and (listener) its proof."""

    idurl: str
    nonce: bytes
    to: str = ""
    signature: bytes = b""


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def transcript(signer_idurl: str, verifier_idurl: str, signer_nonce: bytes, verifier_nonce: bytes) -> bytes:
    """The digest the signer signs to answer the verifier's challenge."""
    digest = hashlib.sha256(_DOMAIN)
    for part in (signer_idurl.encode(), verifier_idurl.encode(), verifier_nonce, signer_nonce):
        digest.update(_LEN.pack(len(part)))
        digest.update(part)
    return digest.digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 4096:
        raise HandshakeError("malformed", what)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HandshakeError("malformed", what) from None


def encode_hello(idurl: str, nonce: bytes, to: str = "", signature: bytes = b"") -> bytes:
    doc: dict[str, Any] = {"v": PROTOCOL_VERSION, "idurl": idurl, "nonce": _b64(nonce)}
    if to:
        doc["to"] = to
    if signature:
        doc["sig"] = _b64(signature)
    return codec.dumps(doc)


def decode_hello(body: bytes | bytearray) -> Hello:
    """Parse a HELLO body; raises `HandshakeError`."""
    doc = _load(body)
    if doc.get("v") != PROTOCOL_VERSION:
        raise HandshakeError("version_mismatch", str(doc.get("v"))[:20])
    idurl, to = doc.get("idurl"), doc.get("to", "")
    if not isinstance(idurl, str) or not idurl or len(idurl) > 1024 or not isinstance(to, str):
        raise HandshakeError("malformed", "idurl")
    nonce = _unb64(doc.get("nonce"), "nonce")
    if len(nonce) != NONCE_SIZE:
        raise HandshakeError("malformed", "nonce size")
    signature = _unb64(doc["sig"], "sig") if "sig" in doc else b""
    return Hello(idurl=idurl, nonce=nonce, to=to, signature=signature)


def encode_auth(signature: bytes) -> bytes:
    return codec.dumps({"sig": _b64(signature)})


def decode_auth(body: bytes | bytearray) -> bytes:
    """The dialer's signature from an AUTH body; raises `HandshakeError`."""
    return _unb64(_load(body).get("sig"), "sig")


def encode_ready(signature: bytes) -> bytes:
    return encode_auth(signature)


def decode_ready(body: bytes | bytearray) -> bytes:
    """The listener's signature from a READY body; raises `HandshakeError`."""
    return decode_auth(body)


def _load(body: bytes | bytearray) -> dict[str, Any]:
    if len(body) > 16 * 1024:
        raise HandshakeError("malformed", "handshake frame too large")
    try:
        doc = codec.loads(bytes(body))
    except ValueError:
        raise HandshakeError("malformed", "not JSON") from None
    if not isinstance(doc, dict):
        raise HandshakeError("malformed", "not an object")
    return doc
