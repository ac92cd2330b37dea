"""The payloads of the `Key` and `AuditKey` packets, built and checked without any I/O.

`Key` carries a key's public half and, when shared with its private half, the private PEM
encrypted with a fresh AES-256-GCM session key that is wrapped (RSA-OAEP) by the recipient's
master public key: only the recipient's keyring agent can open it.

`AuditKey` asks the other node to prove it holds a key: for a public key, the digest of the
public key with a random challenge; for a private key, a signature of the challenge.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from common import crypto
from common.errors import InvalidArgumentError
from common import ids
from services.identity.keyring import KeyRecord

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

CHALLENGE_SIZE = 32


class ShareError(ValueError):
    """A `Key` or `AuditKey` payload that is malformed or does not check out."""


def build_key_payload(record: KeyRecord, recipient_master: rsa.RSAPublicKey, include_private: bool,
                      include_signature: bool) -> dict[str, Any]:
    """The `Key` packet payload sharing `record` with the owner of `recipient_master`."""
    payload: dict[str, Any] = {
        "key_id": record.key_id,
        "label": record.label,
        "active": record.active,
        "creator": record.creator,
        "public": record.public_ssh(),
        "private": None,
    }
    if include_private:
        if record.private is None:
            raise ShareError(f"only the public half of {record.key_id} is known here")
        session = crypto.new_session_key()
        payload["private"] = {
            "session_key": crypto.b64(crypto.wrap_key(recipient_master, session)),
            "blob": crypto.b64(crypto.aes_encrypt(session, crypto.private_key_to_pem(record.private),
                                                  aad=record.key_id.encode())),
        }
    if include_signature and record.signature:
        payload["signature"] = record.signature
    return payload


def open_key_payload(payload: Any, my_master: rsa.RSAPrivateKey, sender_idurl: str) -> KeyRecord:
    """The key a `Key` payload carries, its private half decrypted; raises `ShareError`."""
    if not isinstance(payload, dict):
        raise ShareError("Key payload must be an object")
    key_id = payload.get("key_id")
    try:
        ids.split_key_id(str(key_id))
    except InvalidArgumentError as exc:
        raise ShareError(exc.message) from None
    try:
        public = crypto.load_public_key(str(payload.get("public") or ""))
    except crypto.CryptoError as exc:
        raise ShareError(f"bad public key in payload: {exc}") from None
    private = None
    sealed = payload.get("private")
    if sealed:
        if not isinstance(sealed, dict):
            raise ShareError("private part must be an object")
        try:
            session = crypto.unwrap_key(my_master, crypto.unb64(str(sealed.get("session_key") or "")))
            pem = crypto.aes_decrypt(session, crypto.unb64(str(sealed.get("blob") or "")), aad=str(key_id).encode())
            private = crypto.load_private_key(pem)
        except crypto.CryptoError as exc:
            raise ShareError(f"private part cannot be opened: {exc}") from None
        if crypto.public_key_to_ssh(private.public_key()) != crypto.public_key_to_ssh(public):
            raise ShareError("private and public parts do not match")
    return KeyRecord(
        key_id=str(key_id),
        public=public,
        private=private,
        label=str(payload.get("label") or ""),
        active=bool(payload.get("active", True)),
        creator=str(payload.get("creator") or sender_idurl),
        signature=str(payload.get("signature") or ""),
    )


def new_challenge() -> bytes:
    return os.urandom(CHALLENGE_SIZE)


def _signed_text(key_id: str, challenge: bytes) -> bytes:
    # A fixed prefix and the key id keep an audit signature from being reused as any other signature.
    return b"bitdust-audit-key:" + key_id.encode() + b":" + challenge


def public_proof(public: rsa.RSAPublicKey, challenge: bytes) -> str:
    """Proof of holding a public key: SHA-256 over the DER key and the challenge."""
    from cryptography.hazmat.primitives import serialization  # `public` is a cryptography key: loaded

    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der + challenge).hexdigest()


def audit_answer(record: KeyRecord, challenge: bytes, is_private: bool) -> dict[str, Any]:
    """What the audited node answers; raises `ShareError` when it cannot prove what is asked."""
    if is_private:
        if record.private is None:
            raise ShareError(f"the private half of {record.key_id} is not held here")
        return {"signature": crypto.b64(crypto.sign(record.private, _signed_text(record.key_id, challenge)))}
    return {"digest": public_proof(record.public, challenge)}


def audit_check(key_id: str, public: rsa.RSAPublicKey, challenge: bytes, is_private: bool, answer: Any) -> bool:
    """True when `answer` proves possession of the key (its private half if `is_private`)."""
    if not isinstance(answer, dict):
        return False
    if is_private:
        try:
            signature = crypto.unb64(str(answer.get("signature") or ""))
        except crypto.CryptoError:
            return False
        return crypto.verify(public, _signed_text(key_id, challenge), signature)
    return answer.get("digest") == public_proof(public, challenge)
