"""`common.rsa_public`: the same verdicts as `common.crypto` (OpenSSL), keys parsed alike, bounds held."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import crypto, rsa_public

# 1025 and 1537 bits: the encoded message is one byte shorter than the modulus (RFC 8017 9.1.1).
# (OpenSSL makes odd sizes above 2048 bits one bit short, so none of those.)
SIZES = (1024, 1025, 1031, 1537, 2048, 3072, 4096)


@pytest.fixture(scope="module")
def keys() -> dict[int, rsa.RSAPrivateKey]:
    made = {bits: rsa.generate_private_key(public_exponent=65537, key_size=bits) for bits in SIZES}
    assert {bits: key.key_size for bits, key in made.items()} == {bits: bits for bits in SIZES}
    return made


def _light(key: rsa.RSAPrivateKey) -> rsa_public.PublicKey:
    return rsa_public.load_public_key(crypto.public_key_to_ssh(key.public_key()))


def _agree(key: rsa.RSAPrivateKey, data: bytes, signature: bytes) -> bool:
    """Both verdicts, asserted equal; returns the verdict."""
    expected = crypto.verify(key.public_key(), data, signature)
    assert rsa_public.verify(_light(key), data, signature) is expected, (key.key_size, signature.hex())
    return expected


@pytest.mark.parametrize("bits", SIZES)
def test_a_genuine_signature_verifies_and_every_tampering_fails_alike(keys, bits):
    key = keys[bits]
    for size in (0, 1, 100, 5000):
        data = os.urandom(size)
        signature = crypto.sign(key, data)
        assert _agree(key, data, signature)
        assert not _agree(key, data + b"x", signature)
        for at in (0, len(signature) // 2, len(signature) - 1):
            for bit in (0x01, 0x80):
                forged = bytearray(signature)
                forged[at] ^= bit
                assert not _agree(key, data, bytes(forged))
        assert not _agree(key, data, signature[:-1])
        assert not _agree(key, data, b"\0" + signature)  # longer than the modulus
        other = keys[1024 if bits != 1024 else 2048]
        assert not _agree(other, data, signature)


@pytest.mark.parametrize("bits", (1025, 1537))
def test_a_signature_with_its_leading_zero_bytes_left_out_verifies_as_openssl_does(keys, bits):
    key = keys[bits]
    for attempt in range(200):  # the modulus's top byte is 0x01: most signatures start with 0x00
        data = attempt.to_bytes(2, "big")
        signature = crypto.sign(key, data)
        if signature[0] == 0:
            assert _agree(key, data, signature.lstrip(b"\0"))
            return
    pytest.fail("no signature with a leading zero byte in 200")


@pytest.mark.parametrize("bits", (1024, 1537))
def test_signatures_that_are_no_rsa_value_fail_alike(keys, bits):
    key = keys[bits]
    n = key.public_key().public_numbers().n
    size = (bits + 7) // 8
    for value in (0, 1, 2, n - 1, n, n + 1, 2 ** (8 * size) - 1):
        if value < 2 ** (8 * size):
            assert not _agree(key, b"data", value.to_bytes(size, "big"))
    assert not rsa_public.verify(_light(key), b"data", b"")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(signature=st.binary(min_size=1, max_size=260), data=st.binary(max_size=64))
def test_random_signatures_fail_alike(keys, signature, data):
    _agree(keys[2048], data, signature)


@pytest.mark.parametrize("bits", (1024, 4096))
def test_every_format_of_a_key_parses_to_its_numbers(keys, bits):
    public = keys[bits].public_key()
    numbers = public.public_numbers()
    forms = [
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" a comment",
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
    ]
    for form in forms:
        for text in (form, form.decode()):
            key = rsa_public.load_public_key(text)
            assert (key.n, key.e, key.key_size) == (numbers.n, numbers.e, bits)


def _ssh(*fields: bytes, kind: bytes = b"ssh-rsa") -> str:
    blob = b"".join(len(f).to_bytes(4, "big") + f for f in (kind, *fields))
    return "ssh-rsa " + base64.b64encode(blob).decode()


def _mpint(value: int) -> bytes:
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def test_keys_outside_the_bounds_are_refused_before_any_arithmetic():
    n_2048 = (1 << 2047) | 0xF1  # odd, 2048 bits
    assert rsa_public.load_public_key(_ssh(_mpint(65537), _mpint(n_2048))).key_size == 2048
    refused = {
        "a 512-bit modulus": _ssh(_mpint(65537), _mpint((1 << 511) | 1)),
        "an 8192-bit modulus": _ssh(_mpint(65537), _mpint((1 << 8191) | 1)),
        "an even modulus": _ssh(_mpint(65537), _mpint(n_2048 - 1)),
        "an even exponent": _ssh(_mpint(65536), _mpint(n_2048)),
        "an exponent of 1": _ssh(_mpint(1), _mpint(n_2048)),
        "an exponent of 2048 bits": _ssh(_mpint(n_2048 - 2), _mpint(n_2048)),
        "a negative modulus": _ssh(_mpint(65537), b"\x80" + bytes(255)),
        "an empty exponent": _ssh(b"", _mpint(n_2048)),
        "another key type": _ssh(_mpint(65537), _mpint(n_2048), kind=b"ssh-dss"),
        "data after the key": _ssh(_mpint(65537), _mpint(n_2048), b"more"),
        "a truncated key": _ssh(_mpint(65537), _mpint(n_2048))[:-20],
        "no key data": "ssh-rsa ",
        "bad base64": "ssh-rsa AAA$",
        "no format": "AAAAB3NzaC1yc2E",
        "a PEM without its end": "-----BEGIN PUBLIC KEY-----\nMIIB\n",
        "a PEM of junk": "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----",
        "a PKCS#1 PEM of junk": "-----BEGIN RSA PUBLIC KEY-----\nAgEB\n-----END RSA PUBLIC KEY-----",
    }
    for what, text in refused.items():
        with pytest.raises(rsa_public.CryptoError):
            rsa_public.load_public_key(text)
            pytest.fail(f"{what} was accepted")


def test_a_non_rsa_pem_key_is_refused():
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(rsa_public.CryptoError, match="not an RSA public key"):
        rsa_public.load_public_key(pem)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300).map(lambda b: "ssh-rsa " + base64.b64encode(b).decode()),
    st.binary(max_size=300).map(
        lambda b: "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(b).decode() + "\n-----END PUBLIC KEY-----"),
    st.binary(max_size=300).map(
        lambda b: "-----BEGIN RSA PUBLIC KEY-----\n" + base64.b64encode(b).decode() + "\n-----END RSA PUBLIC KEY-----"),
    st.text(max_size=100),
))
def test_a_hostile_key_text_fails_only_with_crypto_error(text):
    try:
        rsa_public.load_public_key(text)
    except rsa_public.CryptoError:
        pass


def test_common_crypto_shares_the_error_and_base64_helpers():
    assert crypto.CryptoError is rsa_public.CryptoError
    assert crypto.unb64(crypto.b64(b"\x00\xff")) == b"\x00\xff"
    with pytest.raises(rsa_public.CryptoError):
        crypto.unb64("not base64!")
