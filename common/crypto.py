"""Cryptography of the node, all from `cryptography`: RSA keys, RSA-PSS signatures,
RSA-OAEP key wrapping and AES-256-GCM data encryption.

Pure functions over bytes; private keys are used here only by the identity process. A process
that only verifies signatures and must not load `cryptography` uses `common.rsa_public`, which
also holds the error and the base64 helpers both share.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.rsa_public import CryptoError as CryptoError  # shared with the light module, re-exported
from common.rsa_public import b64 as b64
from common.rsa_public import unb64 as unb64

KEY_SIZES = (1024, 2048, 3072, 4096)
PUBLIC_EXPONENT = 65537
NONCE_SIZE = 12
SESSION_KEY_SIZE = 32

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def generate_private_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A new RSA key; `bits` must be one of `KEY_SIZES`."""
    if bits not in KEY_SIZES:
        raise ValueError(f"key size must be one of {KEY_SIZES}")
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)


def private_key_to_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes | str) -> rsa.RSAPrivateKey:
    """Parse a PEM private key; raises `CryptoError`."""
    raw = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"not a private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError("not an RSA private key")
    return key


def public_key_to_ssh(key: rsa.RSAPublicKey) -> str:
    """The public key in OpenSSH form (`ssh-rsa AAAA…`), as the reference engine shows keys."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def load_public_key(text: bytes | str) -> rsa.RSAPublicKey:
    """Parse an OpenSSH or PEM public key; raises `CryptoError`."""
    raw = text.encode() if isinstance(text, str) else text
    raw = raw.strip()
    key: object
    try:
        if raw.startswith(b"ssh-rsa "):
            key = serialization.load_ssh_public_key(raw)
        else:
            key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError, IndexError) as exc:
        raise CryptoError(f"not a public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise CryptoError("not an RSA public key")
    return key


def key_fingerprint(key: rsa.RSAPublicKey) -> str:
    """SHA-256 of the DER public key, hex."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """RSA-PSS / SHA-256 signature of `data`."""
    return key.sign(data, _PSS, hashes.SHA256())


def verify(key: rsa.RSAPublicKey, data: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid RSA-PSS / SHA-256 signature of `data` by `key`."""
    try:
        key.verify(signature, data, _PSS, hashes.SHA256())
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def wrap_key(key: rsa.RSAPublicKey, session_key: bytes) -> bytes:
    """Encrypt a session key to `key` with RSA-OAEP / SHA-256."""
    return key.encrypt(session_key, _OAEP)


def unwrap_key(key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """Decrypt a wrapped session key; raises `CryptoError`."""
    try:
        return key.decrypt(wrapped, _OAEP)
    except ValueError:
        raise CryptoError("session key cannot be unwrapped with this key") from None


def new_session_key() -> bytes:
    return AESGCM.generate_key(bit_length=SESSION_KEY_SIZE * 8)


def seal(key: rsa.RSAPublicKey, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """`plaintext` for the holder of `key` alone: (a fresh session key wrapped to `key`, the body
    encrypted with it, `aad` bound to it)."""
    session_key = new_session_key()
    return wrap_key(key, session_key), aes_encrypt(session_key, plaintext, aad)


def open_sealed(key: rsa.RSAPrivateKey, wrapped: bytes, body: bytes, aad: bytes) -> bytes:
    """Reverse `seal`; raises `CryptoError` if the session key is not for `key` or anything was altered."""
    return aes_decrypt(unwrap_key(key, wrapped), body, aad)


def aes_encrypt(session_key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AES-256-GCM: returns nonce ‖ ciphertext ‖ tag."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(session_key).encrypt(nonce, plaintext, aad or None)


def aes_decrypt(session_key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    """Reverse `aes_encrypt`; raises `CryptoError` on any tampering."""
    if len(blob) < NONCE_SIZE + 16:
        raise CryptoError("ciphertext too short")
    try:
        return AESGCM(session_key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad or None)
    except InvalidTag:
        raise CryptoError("ciphertext was tampered with or the key is wrong") from None
