"""Checking other nodes' master-key signatures in the messaging process, without `cryptography`.

The public key comes from the node's verified identity (the identity process, `identity.fetch`),
the check is `common.rsa_public` (pure Python, like the brokers' membership proofs). A signature
that fails is checked once more against a freshly fetched identity (the signer may have rotated
its key), at most once a minute per signer, so a peer sending junk cannot make us refetch
identities in a loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Awaitable, Callable

from common import rsa_public
from common.errors import NodeError

if TYPE_CHECKING:
    from services.messaging.chain import Link

REFRESH_EVERY = 60.0


class SignatureChecker:
    """Verifies RSA-PSS signatures of known nodes' master keys, keys cached by their text."""

    def __init__(self, public_key: Callable[[str, bool], Awaitable[str]], clock: Callable[[], float] = time.monotonic):
        self._public_key = public_key
        self._clock = clock
        self._parsed: dict[str, rsa_public.PublicKey] = {}
        self._refreshed: dict[str, float] = {}

    async def valid(self, idurl: str, data: bytes, signature: bytes) -> bool:
        """Whether `signature` over `data` was made by the master key of `idurl`.

        Raises:
            NodeError: the identity process is away (5xx): nothing can be said yet.
        """
        if not signature:
            return False
        if self._check(await self._key(idurl, False), data, signature):
            return True
        if self._clock() - self._refreshed.get(idurl, -REFRESH_EVERY) < REFRESH_EVERY:
            return False
        self._refreshed[idurl] = self._clock()
        return self._check(await self._key(idurl, True), data, signature)

    async def link_signed(self, link: Link, brokers: list[tuple[int, str]] | None) -> bool:
        """Whether the link's broker signed it; with `brokers` (position, IDURL), only when that broker
        serves the group now."""
        if brokers is not None and link.broker not in [idurl for _, idurl in brokers]:
            return False
        try:
            signature = rsa_public.unb64(link.signature)
        except rsa_public.CryptoError:
            return False
        return await self.valid(link.broker, link.signed_bytes(), signature)

    async def _key(self, idurl: str, refresh: bool) -> str:
        try:
            return await self._public_key(idurl, refresh)
        except NodeError as err:
            if err.status >= 500:
                raise
            return ""  # nobody known by that IDURL: nothing verifies

    def _check(self, text: str, data: bytes, signature: bytes) -> bool:
        if not text:
            return False
        key = self._parsed.get(text)
        if key is None:
            try:
                key = rsa_public.load_public_key(text)
            except rsa_public.CryptoError:
                return False
            if len(self._parsed) > 4096:
                self._parsed.clear()
            self._parsed[text] = key
        return rsa_public.verify(key, data, signature)
