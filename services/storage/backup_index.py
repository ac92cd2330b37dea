"""The catalog backup: everything under one key, sealed for that key and signed by its owner.

    blob = JSON {"body": <JSON text>, "signature": b64, "signer": owner idurl}
    body = JSON {"v": 1, "key_id", "wrapped": b64 RSA-OAEP(session key), "data": b64 AES-GCM(catalog export)}

Suppliers keep it beside the fragments (object `<key tag>.index`); they cannot read it (it is
encrypted for the key) nor alter it (the signature is checked by every reader against the
owner's master key). It is what `identity_recover` and a share's grantee rebuild a catalog from.
"""

from __future__ import annotations

from typing import Any, Protocol

from common import codec, crypto
from common.errors import NodeError


class IndexError_(NodeError):
    def __init__(self, message: str, reason: str = "index_invalid"):
        super().__init__(message, reason=reason, status=502)


class Keys(Protocol):
    async def public_key(self, key_id: str) -> Any: ...

    async def unwrap(self, key_id: str, wrapped: bytes) -> bytes: ...

    async def sign(self, data: bytes) -> bytes: ...

    async def verify(self, data: bytes, signature: bytes, idurl: str) -> bool: ...


async def seal_index(keys: Keys, doc: dict[str, Any], key_id: str, signer_idurl: str) -> bytes:
    session = crypto.new_session_key()
    wrapped = crypto.wrap_key(await keys.public_key(key_id), session)
    data = crypto.aes_encrypt(session, codec.dumps(doc), aad=key_id.encode())
    body = codec.dumps({"v": 1, "key_id": key_id, "wrapped": crypto.b64(wrapped), "data": crypto.b64(data)})
    signature = await keys.sign(body)
    return codec.dumps({"body": body.decode(), "signature": crypto.b64(signature), "signer": signer_idurl})


async def open_index(keys: Keys, blob: bytes, key_id: str, owner_idurl: str) -> dict[str, Any]:
    """The catalog export in `blob`; raises `IndexError_` unless signed by `owner_idurl` for `key_id`."""
    try:
        outer = codec.loads(blob)
        body = str(outer["body"]).encode()
        signature = crypto.unb64(str(outer["signature"]))
        inner = codec.loads(body)
    except (ValueError, KeyError, TypeError, crypto.CryptoError):
        raise IndexError_("catalog backup is malformed") from None
    if not await keys.verify(body, signature, owner_idurl):
        raise IndexError_("catalog backup signature does not verify", reason="index_bad_signature")
    if inner.get("key_id") != key_id:
        raise IndexError_("catalog backup is for another key")
    try:
        session = await keys.unwrap(key_id, crypto.unb64(str(inner["wrapped"])))
        plain = crypto.aes_decrypt(session, crypto.unb64(str(inner["data"])), aad=key_id.encode())
        doc = codec.loads(plain)
    except (ValueError, KeyError, crypto.CryptoError):
        raise IndexError_("catalog backup cannot be decrypted with this key", reason="index_unreadable") from None
    if not isinstance(doc, dict):
        raise IndexError_("catalog backup is not an object")
    return doc
