"""RSA public keys and RSA-PSS verification without `cryptography`.

The DHT checks the signatures of records and member entries and does nothing else with keys; with
this module its process never loads `cryptography` (about 9.5 MB of RSS per process, see
common/lean.py). Verifying is arithmetic on public data (the key, the signature, the message), so
Python's `pow` is safe here; no secret is involved and there is no timing to protect. It is slower
than OpenSSL (about 0.19 ms against 0.03 ms for a 2048-bit key), so the transport, which verifies
every packet, keeps `common.crypto`.

The verdicts are those of `common.crypto.verify`: RSA-PSS (RFC 8017, 9.1.2) with SHA-256, MGF1
with SHA-256 and a salt of 32 bytes, a signature of at most the modulus's length (OpenSSL reads a
shorter one as having leading zeros). The unit tests compare both on the same keys and signatures.

Keys are bounded before any arithmetic: a modulus of 1024 to 4096 bits, an odd public exponent
below 2**32, so that a key a peer chooses cannot make one check cost more than about 0.7 ms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

MIN_BITS = 1024
MAX_BITS = 4096
MAX_EXPONENT_BITS = 32
_HASH_LEN = 32  # SHA-256
_SALT_LEN = 32  # PSS.DIGEST_LENGTH, as `common.crypto.sign` makes them
_RSA_ENCRYPTION_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1


class CryptoError(Exception):
    """Data that cannot be decrypted, unwrapped or parsed as a key."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An RSA public key: modulus `n`, public exponent `e`."""

    n: int
    e: int

    @property
    def key_size(self) -> int:
        return self.n.bit_length()


def load_public_key(text: bytes | str) -> PublicKey:
    """Parse an OpenSSH (`ssh-rsa AAAA…`) or PEM (`PUBLIC KEY`, `RSA PUBLIC KEY`) RSA public key.

    Raises `CryptoError`, for a key outside the bounds above too.
    """
    raw = (text.encode() if isinstance(text, str) else text).strip()
    if raw.startswith(b"ssh-rsa "):
        n, e = _from_ssh(raw)
    elif raw.startswith(b"-----BEGIN PUBLIC KEY-----"):
        n, e = _from_spki(_pem_body(raw, b"PUBLIC KEY"))
    elif raw.startswith(b"-----BEGIN RSA PUBLIC KEY-----"):
        n, e = _from_pkcs1(_pem_body(raw, b"RSA PUBLIC KEY"))
    else:
        raise CryptoError("not a public key: neither OpenSSH ssh-rsa nor PEM")
    if not MIN_BITS <= n.bit_length() <= MAX_BITS:
        raise CryptoError(f"an RSA key of {n.bit_length()} bits; {MIN_BITS} to {MAX_BITS} are accepted")
    if n % 2 == 0 or e < 3 or e % 2 == 0 or e.bit_length() > MAX_EXPONENT_BITS:
        raise CryptoError("not a valid RSA public key: bad modulus or exponent")
    return PublicKey(n, e)


def verify(key: PublicKey, data: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid RSA-PSS / SHA-256 signature of `data` by `key`."""
    if not signature or len(signature) > (key.n.bit_length() + 7) // 8:
        return False
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return False
    m = pow(s, key.e, key.n)
    em_bits = key.n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    if m >> (8 * em_len):  # does not fit: only possible when em_bits is a multiple of 8
        return False
    return _pss_verify(hashlib.sha256(data).digest(), m.to_bytes(em_len, "big"), em_bits)


def _pss_verify(m_hash: bytes, em: bytes, em_bits: int) -> bool:
    """EMSA-PSS-VERIFY (RFC 8017, 9.1.2) of the encoded message `em`."""
    em_len = len(em)
    if em_len < _HASH_LEN + _SALT_LEN + 2 or em[-1] != 0xBC:
        return False
    masked_db, h = em[: em_len - _HASH_LEN - 1], em[em_len - _HASH_LEN - 1 : -1]
    unused = 8 * em_len - em_bits  # leading bits of the encoded message that must be zero
    if unused and masked_db[0] >> (8 - unused):
        return False
    mask = _mgf1(h, len(masked_db))
    db = (int.from_bytes(masked_db, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(masked_db), "big")
    db = bytes([db[0] & (0xFF >> unused)]) + db[1:]
    padding = em_len - _HASH_LEN - _SALT_LEN - 2
    if db[:padding] != bytes(padding) or db[padding] != 0x01:
        return False
    expected = hashlib.sha256(bytes(8) + m_hash + db[-_SALT_LEN:]).digest()
    return hmac.compare_digest(h, expected)


def _mgf1(seed: bytes, length: int) -> bytes:
    blocks = (length + _HASH_LEN - 1) // _HASH_LEN
    return b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(blocks))[:length]


# --- key formats -------------------------------------------------------------------------------


def _from_ssh(raw: bytes) -> tuple[int, int]:
    """RFC 4253, 6.6: string "ssh-rsa", mpint e, mpint n."""
    fields = raw.split()
    if len(fields) < 2:
        raise CryptoError("not a public key: no key data after ssh-rsa")
    blob = unb64(fields[1].decode("ascii", "replace"))
    pos = 0

    def field() -> bytes:
        nonlocal pos
        if pos + 4 > len(blob):
            raise CryptoError("not a public key: truncated ssh-rsa key")
        size = int.from_bytes(blob[pos : pos + 4], "big")
        if pos + 4 + size > len(blob):
            raise CryptoError("not a public key: truncated ssh-rsa key")
        pos += 4 + size
        return blob[pos - size : pos]

    if field() != b"ssh-rsa":
        raise CryptoError("not a public key: the key data is not ssh-rsa")
    e, n = _positive(field()), _positive(field())
    if pos != len(blob):
        raise CryptoError("not a public key: data after the ssh-rsa key")
    return n, e


def _pem_body(raw: bytes, label: bytes) -> bytes:
    lines = raw.splitlines()
    if lines[-1].strip() != b"-----END " + label + b"-----":
        raise CryptoError(f"not a public key: no END {label.decode()} line")
    return unb64(b"".join(line.strip() for line in lines[1:-1]).decode("ascii", "replace"))


def _from_spki(der: bytes) -> tuple[int, int]:
    """SubjectPublicKeyInfo (RFC 5280) of an rsaEncryption key."""
    info, end = _der(der, 0, 0x30)
    if end != len(der):
        raise CryptoError("not a public key: data after the key")
    algorithm, pos = _der(info, 0, 0x30)
    oid, params_at = _der(algorithm, 0, 0x06)
    if oid != _RSA_ENCRYPTION_OID or algorithm[params_at:] not in (b"", b"\x05\x00"):
        raise CryptoError("not an RSA public key")
    bits, pos = _der(info, pos, 0x03)
    if pos != len(info) or not bits or bits[0] != 0:
        raise CryptoError("not a public key: malformed key bits")
    return _from_pkcs1(bits[1:])


def _from_pkcs1(der: bytes) -> tuple[int, int]:
    """RSAPublicKey (RFC 8017, A.1.1): SEQUENCE { INTEGER n, INTEGER e }."""
    body, end = _der(der, 0, 0x30)
    if end != len(der):
        raise CryptoError("not a public key: data after the key")
    n, pos = _der(body, 0, 0x02)
    e, pos = _der(body, pos, 0x02)
    if pos != len(body):
        raise CryptoError("not a public key: data after the exponent")
    return _positive(n), _positive(e)


def _der(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """The content of the DER element of `tag` at `pos`, and where the next element starts."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise CryptoError("not a public key: malformed DER")
    size, pos = data[pos + 1], pos + 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 2 or pos + count > len(data):
            raise CryptoError("not a public key: malformed DER length")
        size, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    if pos + size > len(data):
        raise CryptoError("not a public key: truncated DER")
    return data[pos : pos + size], pos + size


def _positive(raw: bytes) -> int:
    """A big-endian two's-complement integer (ssh mpint, DER INTEGER) that must be positive."""
    if not raw or raw[0] & 0x80:
        raise CryptoError("not a public key: a key number is not positive")
    return int.from_bytes(raw, "big")


# --- base64 ------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    """Decode base64 text; raises `CryptoError` on malformed input."""
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise CryptoError("malformed base64") from None
