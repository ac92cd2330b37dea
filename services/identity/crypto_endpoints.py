"""The identity process's cryptographic verbs for the other processes: sign, verify, unwrap, seal,
open and derive, each with a key held here, so no other process holds a private key or (for
messaging) loads a cipher at all.

A mixin of `IdentityService` over the key lookups of `KeysEndpoints`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

from common import crypto
from common.endpoint import endpoint
from common.errors import InvalidArgumentError
from services.identity.keys_endpoints import KeysEndpoints

DERIVED_PURPOSES = ("ledger-wallet",)
"""What `derive_secret` derives secrets for: each purpose its own, none other."""
INLINE_SEAL_LIMIT = 64 * 1024
"""Bytes `seal` encrypts on the event loop (tens of µs); larger messages go to a thread."""


class CryptoEndpoints(KeysEndpoints):
    """`identity.sign`, `derive_secret`, `verify`, `public_key`, `unwrap`, `seal` and `open`."""

    @endpoint("sign", internal=True)
    async def sign(self, data: str, key_id: str | None = None) -> dict[str, Any]:
        """RSA-PSS/SHA-256 signature of base64 `data` by a key held here (the master key by default)."""
        raw = _unb64(data, "data")
        record = self.private_record(key_id)
        assert record.private is not None
        signature = await asyncio.to_thread(crypto.sign, record.private, raw)
        return {"signature": crypto.b64(signature), "key_id": record.key_id}

    @endpoint("derive_secret", internal=True)
    async def derive_secret(self, purpose: str) -> dict[str, Any]:
        """32 bytes (hex) derived from the master private key for `purpose` (HMAC-SHA256).

        The same identity, recovered anywhere, derives the same bytes: the ledger makes its wallet
        key from them, so `identity_recover` restores the wallet while the master key stays here.
        """
        if purpose not in DERIVED_PURPOSES:
            raise InvalidArgumentError(f"no secret is derived for {purpose!r}", reason="invalid_argument")
        record = self.private_record(None)
        assert record.private is not None
        secret = record.private.private_numbers().d.to_bytes(512, "big")
        return {"secret": hmac.new(secret, f"bitdust/{purpose}".encode(), hashlib.sha256).hexdigest()}

    @endpoint("verify", internal=True)
    async def verify(self, data: str, signature: str, idurl: str) -> bool:
        """True when `signature` over `data` was made by the master key of `idurl`."""
        raw = _unb64(data, "data")
        try:
            sig = crypto.unb64(signature)
        except crypto.CryptoError:
            return False
        doc = await self.fetch_document(idurl)
        return await asyncio.to_thread(crypto.verify, doc.public_key(), raw, sig)

    @endpoint("public_key", internal=True)
    async def public_key(self, key_id: str) -> dict[str, Any]:
        """The public half of a key we hold or were given, or of another node's master key."""
        record = await self.public_record(key_id)
        return {"key_id": record.key_id, "public": record.public_ssh()}

    @endpoint("unwrap", internal=True)
    async def unwrap(self, key_id: str, data: str) -> dict[str, Any]:
        """RSA-OAEP unwrap of a session key with a private key held here."""
        record = self.private_record(key_id)
        assert record.private is not None
        try:
            plain = await asyncio.to_thread(crypto.unwrap_key, record.private, _unb64(data, "data"))
        except crypto.CryptoError:
            raise InvalidArgumentError(f"data cannot be unwrapped with {record.key_id}",
                                       reason="unwrap_failed") from None
        return {"data": crypto.b64(plain)}

    @endpoint("seal", internal=True)
    async def seal(self, public_key: str, data: str, aad: str) -> dict[str, Any]:
        """Base64 `data` sealed for the holder of `public_key` (`crypto.seal`), `aad` bound to it.

        Messages are sealed and opened here, so the messaging process loads no cipher at all.
        """
        try:
            key = crypto.load_public_key(public_key)
        except crypto.CryptoError:
            raise InvalidArgumentError("public_key is not a valid RSA public key", reason="invalid_key") from None
        plain, bound = _unb64(data, "data"), _unb64(aad, "aad")
        if len(plain) > INLINE_SEAL_LIMIT:
            wrapped, body = await asyncio.to_thread(crypto.seal, key, plain, bound)
        else:  # a public-key operation and a short cipher pass: cheaper than the hop to a thread
            wrapped, body = crypto.seal(key, plain, bound)
        return {"key": crypto.b64(wrapped), "body": crypto.b64(body)}

    @endpoint("open", internal=True)
    async def open_sealed(self, key: str, body: str, aad: str, key_id: str | None = None) -> dict[str, Any]:
        """The plaintext of what `seal` made for a private key held here (the master key by default);
        400 `undecryptable` when it was made for another key or altered."""
        record = self.private_record(key_id)
        assert record.private is not None
        parts = (_unb64(key, "key"), _unb64(body, "body"), _unb64(aad, "aad"))
        try:
            plain = await asyncio.to_thread(crypto.open_sealed, record.private, *parts)
        except crypto.CryptoError:
            raise InvalidArgumentError(f"it does not open with {record.key_id}", reason="undecryptable") from None
        return {"data": crypto.b64(plain)}

def _unb64(text: Any, what: str) -> bytes:
    try:
        return crypto.unb64(text)
    except crypto.CryptoError:
        raise InvalidArgumentError(f"{what} must be base64") from None
