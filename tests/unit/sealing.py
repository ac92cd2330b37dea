"""Sealing and opening messages as the identity process does (`identity.seal`, `identity.open`),
for the fakes of the messaging unit tests."""

from __future__ import annotations

from typing import Any

from common import codec, crypto
from common.errors import InvalidArgumentError
from services.messaging import envelope


def seal(header: envelope.Header, data: dict[str, Any], public_key: Any) -> dict[str, Any]:
    """The payload of `data` sealed for `public_key` (a key object or OpenSSH text)."""
    if isinstance(public_key, str):
        public_key = crypto.load_public_key(public_key)
    wrapped, body = crypto.seal(public_key, codec.dumps(data), header.aad())
    return envelope.sealed_payload(header, wrapped, body)


def open_with(private_key: Any, sealed: envelope.Sealed) -> bytes:
    """The plaintext, or the identity process's 400 `undecryptable`."""
    try:
        return crypto.open_sealed(private_key, sealed.wrapped_key, sealed.body, sealed.header.aad())
    except crypto.CryptoError:
        raise InvalidArgumentError("it does not open with this key", reason="undecryptable") from None
