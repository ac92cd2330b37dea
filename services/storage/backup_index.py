"""The catalog backup: everything under one key, sealed for that key and signed by its owner.

    blob = JSON {"body": <JSON text>, "signature": b64, "signer": owner idurl}
    body = JSON {"v": 2, "key_id", "exported": <unix ms>, "wrapped": b64 RSA-OAEP(session key),
                 "data": b64 AES-GCM(catalog export, aad = key_id)}

Suppliers keep it beside the fragments (object `<key tag>.index`); they cannot read it (it is
encrypted for the key) nor alter it (the signature is checked by every reader against the
owner's master key). It is what `identity_recover` and a share's grantee rebuild a catalog from.

Two things a signature alone does not settle, and what the reader does about them:

- **Which copy.** A supplier may hand back an older copy it kept (a genuine one, so it verifies).
  `exported` is in the signed body, so the reader asks every supplier and restores the newest copy
  that verifies, never the first: one supplier with the newest copy is enough.
- **Which key.** The owner of a share signs its backups, and a hostile owner can put any `key_id`
  inside the encrypted document (the grantee's own `master$…`). The document is accepted only when
  it names the key that was asked for and checked, so what it holds lands under that key alone.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common import codec, crypto
from common.errors import NodeError, NotFoundError
from services.storage.fragments import index_name

FORMAT = 2


class IndexError_(NodeError):
    def __init__(self, message: str, reason: str = "index_invalid"):
        super().__init__(message, reason=reason, status=502)


class Keys(Protocol):
    async def public_key(self, key_id: str) -> Any: ...

    async def unwrap(self, key_id: str, wrapped: bytes) -> bytes: ...

    async def sign(self, data: bytes) -> bytes: ...

    async def verify(self, data: bytes, signature: bytes, idurl: str) -> bool: ...


class IndexWire(Protocol):
    async def fetch_file(self, idurl: str, name: str, customer_idurl: str | None,
                         timeout: float) -> dict[str, Any]: ...


class IndexPeers(Keys, Protocol):
    """The keys and the wire to the suppliers, as `wire.BusPeers` offers them."""

    @property
    def wire(self) -> IndexWire: ...


@dataclass(frozen=True)
class SignedIndex:
    """A backup whose signature and key were checked, not yet decrypted."""

    key_id: str
    exported_ms: int
    wrapped: str
    data: str


async def seal_index(keys: Keys, doc: dict[str, Any], key_id: str, signer_idurl: str) -> bytes:
    """The backup blob of catalog export `doc` for `key_id`, signed by this node's master key."""
    session = crypto.new_session_key()
    wrapped = crypto.wrap_key(await keys.public_key(key_id), session)
    data = crypto.aes_encrypt(session, codec.dumps(dict(doc, key_id=key_id)), aad=key_id.encode())
    body = codec.dumps({"v": FORMAT, "key_id": key_id, "exported": int(time.time() * 1000),
                        "wrapped": crypto.b64(wrapped), "data": crypto.b64(data)})
    signature = await keys.sign(body)
    return codec.dumps({"body": body.decode(), "signature": crypto.b64(signature), "signer": signer_idurl})


async def check_index(keys: Keys, blob: bytes, key_id: str, owner_idurl: str) -> SignedIndex:
    """The signed envelope of `blob`; raises `IndexError_` unless `owner_idurl` signed it for `key_id`."""
    try:
        outer = codec.loads(blob)
        body = str(outer["body"]).encode()
        signature = crypto.unb64(str(outer["signature"]))
        inner = codec.loads(body)
        signed = SignedIndex(str(inner["key_id"]), int(inner["exported"]), str(inner["wrapped"]),
                             str(inner["data"]))
        version = inner["v"]
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError):
        raise IndexError_("catalog backup is malformed") from None
    if version != FORMAT:
        raise IndexError_(f"catalog backup format {version!r:.20} is not {FORMAT}", reason="index_format")
    if not await keys.verify(body, signature, owner_idurl):
        raise IndexError_("catalog backup signature does not verify", reason="index_bad_signature")
    if signed.key_id != key_id:
        raise IndexError_("catalog backup is for another key", reason="index_key_mismatch")
    return signed


async def read_index(keys: Keys, signed: SignedIndex) -> dict[str, Any]:
    """The catalog export inside a checked backup, bound to the key that was checked.

    Raises:
        IndexError_: `index_unreadable` when it does not decrypt with the key, `index_key_mismatch`
            when the document names another key than the signed envelope (a share owner writing
            into the grantee's own catalog), `index_invalid` when it is not a catalog export.
    """
    try:
        session = await keys.unwrap(signed.key_id, crypto.unb64(signed.wrapped))
        plain = crypto.aes_decrypt(session, crypto.unb64(signed.data), aad=signed.key_id.encode())
        doc = codec.loads(plain)
    except (ValueError, KeyError, TypeError, crypto.CryptoError):
        raise IndexError_("catalog backup cannot be decrypted with this key", reason="index_unreadable") from None
    if not isinstance(doc, dict):
        raise IndexError_("catalog backup is not an object")
    if doc.get("key_id") != signed.key_id:
        raise IndexError_("catalog backup holds entries of another key", reason="index_key_mismatch")
    return doc


async def open_index(keys: Keys, blob: bytes, key_id: str, owner_idurl: str) -> dict[str, Any]:
    """The catalog export in `blob`; raises `IndexError_` unless signed by `owner_idurl` for `key_id`."""
    return await read_index(keys, await check_index(keys, blob, key_id, owner_idurl))


async def open_newest(keys: Keys, blobs: list[bytes], key_id: str, owner_idurl: str,
                      errors: list[str] | None = None) -> dict[str, Any]:
    """The newest (by signed export time) of the backups in `blobs` that opens.

    Raises:
        NotFoundError: `index_not_found` when none does; `errors` (appended to) says why.
    """
    errors = [] if errors is None else errors
    signed: list[SignedIndex] = []
    for blob in blobs:
        try:
            signed.append(await check_index(keys, blob, key_id, owner_idurl))
        except NodeError as err:
            errors.append(err.reason)
    for candidate in sorted(signed, key=lambda s: s.exported_ms, reverse=True):
        try:
            return await read_index(keys, candidate)
        except NodeError as err:
            errors.append(err.reason)
    raise NotFoundError(f"no supplier had a readable catalog backup of {key_id} ({', '.join(errors)})",
                        reason="index_not_found")


async def fetch_newest(peers: IndexPeers, suppliers: list[str], key_id: str, owner_idurl: str,
                       customer_idurl: str | None, timeout: float) -> dict[str, Any]:
    """Ask every supplier for the backup of `key_id` at once and open the newest that verifies.

    `customer_idurl` is whose objects to read (None: our own). Every supplier is asked, not the
    first that answers: a supplier that kept an older copy must not decide what is restored. The
    cost is one round trip to the slowest supplier (bounded by `timeout`).

    Raises:
        NotFoundError: `index_not_found` when no supplier had a backup that opens.
    """
    answers = await asyncio.gather(*(_fetch(peers.wire, s, key_id, customer_idurl, timeout)
                                     for s in suppliers if s))
    errors = [a for a in answers if isinstance(a, str)]
    return await open_newest(peers, [a for a in answers if isinstance(a, bytes)], key_id, owner_idurl, errors)


async def _fetch(wire: IndexWire, supplier: str, key_id: str, customer_idurl: str | None,
                 timeout: float) -> bytes | str:
    """The backup blob `supplier` holds, or the reason it gave none."""
    try:
        reply = await wire.fetch_file(supplier, index_name(key_id), customer_idurl, timeout)
    except NodeError as err:
        return err.reason or "unreachable"
    path = reply.get("payload_path")
    if not path:
        return "not_found"
    try:
        return Path(path).read_bytes()
    except OSError:
        return "not_found"
    finally:
        Path(path).unlink(missing_ok=True)
