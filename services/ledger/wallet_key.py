"""The node's wallet key: derived from its identity key, encoded as the engine expects.

The identity process hands out `derive_secret("ledger-wallet")`, an HMAC-SHA256 of that label under
the identity's master private key: the same identity (recovered elsewhere with
`identity_recover`) gives the same 32 bytes, hence the same wallet key and address, and the
master key itself never leaves the identity process. The bytes, read as a number modulo the
secp256k1 group order, are the wallet's private key (zero is refused: it cannot happen by chance).

Encodings are the engine's (Litecoin regtest): WIF with version 0xEF and the compressed flag, and
a pay-to-public-key-hash address with version 0x6F (`m…`/`n…`), both in base58check.
"""

from __future__ import annotations

import hashlib

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
WIF_VERSION = 0xEF
P2PKH_VERSION = 0x6F
ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class WalletKeyError(ValueError):
    """The secret cannot make a key, or an address does not decode."""


def private_number(secret: bytes) -> int:
    """The wallet's private key from 32 derived bytes; raises `WalletKeyError`."""
    if len(secret) != 32:
        raise WalletKeyError("the wallet secret must be 32 bytes")
    number = int.from_bytes(secret, "big") % SECP256K1_ORDER
    if number == 0:
        raise WalletKeyError("the wallet secret makes no key")
    return number


def compressed_public_key(number: int) -> bytes:
    """The 33-byte compressed public key of a private key number."""
    # Imported here: the ledger process needs it once per start (about 9.5 MB it need not keep mapped before).
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.derive_private_key(number, ec.SECP256K1())
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


def hash160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()


def b58check_encode(payload: bytes) -> str:
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(data, "big")
    text = ""
    while number:
        number, rest = divmod(number, 58)
        text = ALPHABET[rest] + text
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + text


def b58check_decode(text: str) -> bytes:
    """The payload of a base58check string; raises `WalletKeyError` on a bad character or checksum."""
    number = 0
    for char in text:
        index = ALPHABET.find(char)
        if index < 0:
            raise WalletKeyError("not base58")
        number = number * 58 + index
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    data = b"\0" * (len(text) - len(text.lstrip("1"))) + body
    if len(data) < 5:
        raise WalletKeyError("too short")
    payload, check = data[:-4], data[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != check:
        raise WalletKeyError("bad checksum")
    return payload


def wif(number: int) -> str:
    """The private key as the engine's `importprivkey` takes it (compressed)."""
    return b58check_encode(bytes([WIF_VERSION]) + number.to_bytes(32, "big") + b"\x01")


def address(number: int) -> str:
    """The pay-to-public-key-hash address of the key."""
    return b58check_encode(bytes([P2PKH_VERSION]) + hash160(compressed_public_key(number)))


def is_address(text: str) -> bool:
    """True for a well-formed P2PKH address of this chain (checksum included)."""
    if not 26 <= len(text) <= 35:
        return False
    try:
        payload = b58check_decode(text)
    except WalletKeyError:
        return False
    return len(payload) == 21 and payload[0] == P2PKH_VERSION
