"""The ledger's pure parts: the on-chain payload, amounts, and the wallet key's encodings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.errors import InvalidArgumentError
from services.ledger import payload, wallet_key
from services.ledger.amounts import parse_amount
from services.ledger.payload import Payload


def _script(raw: bytes) -> str:
    """An OP_RETURN script as the engine writes it: a direct push, OP_PUSHDATA1 or OP_PUSHDATA2."""
    if len(raw) <= 75:
        push = bytes([len(raw)])
    elif len(raw) <= 255:
        push = b"\x4c" + bytes([len(raw)])
    else:
        push = b"\x4d" + len(raw).to_bytes(2, "little")
    return (b"\x6a" + push + raw).hex()


@pytest.mark.parametrize("data", ["", "hello", "é" * 100, "x" * 980])
def test_payload_round_trips_through_every_push_size(data):
    sent = Payload("storage", data)
    raw = payload.encode(sent)
    assert payload.decode(payload.from_script(_script(raw)) or b"") == sent


def test_payload_refuses_what_does_not_fit_and_bad_operations():
    with pytest.raises(InvalidArgumentError) as err:
        payload.encode(Payload("storage", "x" * 1000))
    assert err.value.reason == "data_too_long" and err.value.status == 400
    for operation in ("Storage", "a b", "x" * 33, "é"):
        with pytest.raises(InvalidArgumentError) as err:
            payload.encode(Payload(operation, ""))
        assert err.value.reason == "invalid_operation"


@pytest.mark.parametrize("raw", [b"", b"BDL", b"XYZ\x01\x00", b"BDL\x02\x00", b"BDL\x01\x09ab", b"BDL\x01\x01A",
                                 b"BDL\x01\x00\xff\xfe"])
def test_foreign_or_broken_payloads_are_not_ours(raw):
    assert payload.decode(raw) is None


def test_only_op_return_scripts_carry_a_payload():
    assert payload.from_script("76a914" + "00" * 20 + "88ac") is None  # pay to a key hash
    assert payload.from_script("6a05abcd") is None  # a push longer than the script
    assert payload.from_script("zz") is None


@pytest.mark.parametrize(("given", "expected"), [
    ("1.5", Decimal("1.5")), (2, Decimal(2)), (0.1, Decimal("0.1")), ("0.00000001", Decimal("0.00000001")),
    (" 3 ", Decimal(3)),
])
def test_amounts_accepted(given, expected):
    assert parse_amount(given) == expected


@pytest.mark.parametrize("given", ["abc", "", None, True, [], "NaN", "nan", "inf", float("nan"), float("inf"),
                                   0, "0", -1, "-0.5", "1.000000001", 1e-9, "84000000", 1e12])
def test_amounts_refused(given):
    with pytest.raises(InvalidArgumentError) as err:
        parse_amount(given)
    assert err.value.reason == "invalid_amount" and err.value.status == 400


def test_wallet_key_encodings_match_the_engine():
    # The engine (litecoind 0.21.2.1, regtest) imported this WIF and answered this address as its own
    # (`importprivkey`, then `getaddressinfo` -> ismine): see tests/service/test_ledger_engine.py too.
    number = wallet_key.private_number(bytes(range(32)))
    assert wallet_key.wif(number) == "cMai6KJ8sHnNejZctqjiYdg2KSLeiaKcuTbZQrJNEjmMY5JQw6eP"
    assert wallet_key.address(number) == "mm5Yiba1U2odgUskxnXMJGQMV1DSAXVPib"
    assert wallet_key.is_address("mm5Yiba1U2odgUskxnXMJGQMV1DSAXVPib")


def test_wallet_key_refusals_and_address_checks():
    with pytest.raises(wallet_key.WalletKeyError):
        wallet_key.private_number(b"\0" * 31)
    with pytest.raises(wallet_key.WalletKeyError):
        wallet_key.private_number(wallet_key.SECP256K1_ORDER.to_bytes(32, "big"))
    assert not wallet_key.is_address("mm5Yiba1U2odgUskxnXMJGQMV1DSAXVPic")  # one character off: bad checksum
    assert not wallet_key.is_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2")  # a main-net Bitcoin address
    assert not wallet_key.is_address("0OIl" * 8)
