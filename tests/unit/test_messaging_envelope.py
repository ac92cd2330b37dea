"""Sealing private messages: round trip, and every way a sealed message is refused."""

from __future__ import annotations

import pytest

from common import crypto
from services.messaging import envelope
from services.messaging.envelope import EnvelopeError, Header
from tests.unit.sealing import seal

ALICE = "http://127.0.0.1:8084/alice.xml"
BOB = "http://127.0.0.1:8084/bob.xml"
KEY = crypto.generate_private_key(1024)
NOW = 1_800_000_000.0


def _sealed(**changes: object) -> dict:
    header = Header("private_message", envelope.new_message_id(), ALICE, BOB, NOW)
    doc = seal(header, {"message": "hi"}, KEY.public_key())
    doc.update(changes)
    return doc


def _open(doc: dict) -> dict:
    sealed = envelope.parse(doc)
    return envelope.decode_body(crypto.open_sealed(KEY, sealed.wrapped_key, sealed.body, sealed.header.aad()))


def test_round_trip_and_fresh_session_keys():
    doc = _sealed()
    assert _open(doc) == {"message": "hi"}
    assert b"\"message\"" not in crypto.unb64(doc["body"])
    assert _sealed()["key"] != doc["key"]
    assert envelope.new_message_id().startswith("private_")


def test_header_is_bound_to_the_body():
    for field, value in (("sender", "http://127.0.0.1:8084/mallory.xml"), ("message_id", "private_1"),
                         ("time", NOW + 1), ("recipient", ALICE)):
        with pytest.raises(crypto.CryptoError):
            _open(_sealed(**{field: value}))


def test_malformed_is_refused():
    for bad in (None, [], {"v": 2}, _sealed(key="%%%"), _sealed(msg_type="spam"), _sealed(body=""),
                _sealed(time="soon")):
        with pytest.raises(EnvelopeError) as err:
            envelope.parse(bad)
        assert err.value.reason == "malformed"


def test_body_must_be_an_object():
    header = Header("private_message", "private_1", ALICE, BOB, NOW)
    doc = envelope.sealed_payload(header, *crypto.seal(KEY.public_key(), b"[1, 2]", header.aad()))
    with pytest.raises(EnvelopeError) as err:
        _open(doc)
    assert err.value.reason == "malformed"


def test_check_header():
    header = envelope.parse(_sealed()).header
    envelope.check_header(header, ALICE, BOB, NOW, max_age=60)
    cases = [((BOB, BOB, NOW), "forged_sender"), ((ALICE, ALICE, NOW), "wrong_recipient"),
             ((ALICE, BOB, NOW - 10_000), "bad_time"), ((ALICE, BOB, NOW + 10_000), "expired")]
    for (creator, me, now), reason in cases:
        with pytest.raises(EnvelopeError) as err:
            envelope.check_header(header, creator, me, now, max_age=60)
        assert err.value.reason == reason
