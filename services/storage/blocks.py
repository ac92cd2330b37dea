"""One block of a file, sealed and spread: AES-256-GCM, then Reed-Solomon (zfec) k-of-N.

Pure code over bytes. A version of a file has one fresh session key; block `b` is encrypted with
the nonce `b` (12 bytes, big endian), which is unique under that key, and with the version id and
block number as associated data, so a fragment of one block can never pass for another's.

    plaintext block ──AES-GCM──> ciphertext + tag ──pad to k·L──> k primary shares of L bytes
                                                      └─zfec──> N-k secondary shares (L bytes)

Share `i` is the fragment stored by the supplier at position `i`. Any k of them give the
ciphertext back; with the first k (the primary shares) decoding is a plain concatenation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import zfec

# `cryptography` (about 6 MB per process) is imported inside `seal` and `open_block`: by the first
# block sealed or opened, not when the storage process starts.

TAG_SIZE = 16
MAX_SUPPLIERS = 64


class BlockError(ValueError):
    """A block that cannot be rebuilt: too few shares, wrong sizes, or ciphertext that fails its tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def data_shares(suppliers: int) -> int:
    """k = ceil(N/2): the shares needed to rebuild a block stored with N suppliers."""
    if not 1 <= suppliers <= MAX_SUPPLIERS:
        raise BlockError("invalid_ecc", f"{suppliers} suppliers")
    return max(1, math.ceil(suppliers / 2))


def ecc_map_name(suppliers: int) -> str:
    """The reference engine's name of the map for N suppliers (`ecc/4x4`)."""
    return f"ecc/{suppliers}x{suppliers}"


def suppliers_of(ecc_map: str) -> int:
    """N from an ecc map name; raises `BlockError` for anything else."""
    try:
        left, right = ecc_map.removeprefix("ecc/").split("x", 1)
        count = int(left)
        if count != int(right):
            raise ValueError(ecc_map)
    except ValueError:
        raise BlockError("invalid_ecc", ecc_map) from None
    data_shares(count)
    return count


def sha256_hex(data: Union[bytes, bytearray, memoryview]) -> str:
    return hashlib.sha256(data).hexdigest()


def _nonce(block_no: int) -> bytes:
    return block_no.to_bytes(12, "big")


def _aad(version_uid: str, block_no: int) -> bytes:
    return f"{version_uid}:{block_no}".encode()


Buffer = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True)
class SealedBlock:
    """The N fragments of one block, with what a reader needs to check and rebuild it.

    The primary fragments are views into the buffer the block was sealed into.
    """

    fragments: Sequence[Buffer]
    hashes: list[str]
    cipher_size: int


def sealed_size(plain_size: int, suppliers: int) -> int:
    """Bytes of the buffer `seal` encrypts a block of `plain_size` bytes into (k shares, padded)."""
    k = data_shares(suppliers)
    return max(1, math.ceil((plain_size + TAG_SIZE) / k)) * k


def seal(session_key: bytes, version_uid: str, block_no: int, plain: Buffer, suppliers: int,
         buffer: bytearray | None = None) -> SealedBlock:
    """Encrypt one block and cut it into one fragment per supplier.

    With `buffer` (at least `sealed_size` bytes) the ciphertext is written into it and the primary
    fragments are views of it, valid until the buffer is reused; one buffer serves every block.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    k = data_shares(suppliers)
    cipher_size = len(plain) + TAG_SIZE
    padded_size = sealed_size(len(plain), suppliers)
    share_size = padded_size // k
    if buffer is None or len(buffer) < padded_size:
        buffer = bytearray(padded_size)
    out = memoryview(buffer)[:padded_size]
    AESGCM(session_key).encrypt_into(_nonce(block_no), plain, _aad(version_uid, block_no), out[:cipher_size])
    out[cipher_size:] = bytes(padded_size - cipher_size)
    primary = [out[i * share_size:(i + 1) * share_size] for i in range(k)]
    fragments: list[Buffer] = list(primary)
    if suppliers > k:
        fragments.extend(zfec.Encoder(k, suppliers).encode(primary, list(range(k, suppliers))))
    return SealedBlock(fragments, [sha256_hex(f) for f in fragments], cipher_size)


def reassemble(shares: Mapping[int, Buffer], suppliers: int, cipher_size: int) -> bytearray:
    """The ciphertext of a block from any k of its fragments (position -> bytes)."""
    k = data_shares(suppliers)
    chosen = sorted(pos for pos in shares if 0 <= pos < suppliers)[:k]
    if len(chosen) < k:
        raise BlockError("not_enough_fragments", f"{len(chosen)} of {k}")
    size = len(shares[chosen[0]])
    if any(len(shares[pos]) != size for pos in chosen) or size * k < cipher_size:
        raise BlockError("fragment_size_mismatch")
    if chosen == list(range(k)):
        primary: Sequence[Buffer] = [shares[pos] for pos in chosen]
    else:
        primary = zfec.Decoder(k, suppliers).decode([shares[pos] for pos in chosen], chosen)
    cipher = bytearray(cipher_size)
    view = memoryview(cipher)
    for i, share in enumerate(primary):
        start = i * size
        if start >= cipher_size:
            break
        end = min(start + size, cipher_size)
        view[start:end] = memoryview(share)[:end - start]
    view.release()
    return cipher


def open_block(session_key: bytes, version_uid: str, block_no: int, cipher: Buffer) -> bytes:
    """Decrypt one block; raises `BlockError("block_corrupt")` when the tag does not match."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(session_key).decrypt(_nonce(block_no), cipher, _aad(version_uid, block_no))
    except InvalidTag:
        raise BlockError("block_corrupt", f"block {block_no} failed authentication") from None


def rebuild_fragments(shares: Mapping[int, Buffer], suppliers: int, cipher_size: int,
                      wanted: list[int]) -> dict[int, bytes]:
    """Fragments at positions `wanted`, recomputed from any k others (no key needed)."""
    k = data_shares(suppliers)
    cipher = reassemble(shares, suppliers, cipher_size)
    share_size = len(next(iter(shares.values())))
    cipher.extend(bytes(share_size * k - len(cipher)))
    padded = memoryview(cipher)
    primary = [padded[i * share_size:(i + 1) * share_size] for i in range(k)]
    out: dict[int, bytes] = {pos: bytes(primary[pos]) for pos in wanted if pos < k}
    secondary = [pos for pos in wanted if pos >= k]
    if secondary:
        made = zfec.Encoder(k, suppliers).encode(primary, secondary)
        out.update({pos: bytes(data) for pos, data in zip(secondary, made, strict=False)})
    return out
