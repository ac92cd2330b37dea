"""Key sharing and audit payloads: only the recipient opens a private key; proofs are checked."""

from __future__ import annotations

import pytest

from common import crypto
from services.identity import keyshare
from services.identity.keyring import KeyRecord
from services.identity.keyshare import ShareError

KEY_ID = "share1$alice@127.0.0.1_8084"


@pytest.fixture(scope="module")
def keys():
    return [crypto.generate_private_key(1024) for _ in range(3)]


def _record(key, private=True):
    return KeyRecord(key_id=KEY_ID, public=key.public_key(), private=key if private else None, label="cats",
                     creator="http://127.0.0.1:8084/alice.xml")


def test_private_share_opens_only_for_the_recipient(keys):
    shared, bob, carol = keys
    payload = keyshare.build_key_payload(_record(shared), bob.public_key(), include_private=True,
                                         include_signature=False)
    assert "PRIVATE" not in str(payload)
    record = keyshare.open_key_payload(payload, bob, "http://127.0.0.1:8084/alice.xml")
    assert record.key_id == KEY_ID and record.label == "cats" and record.private is not None
    assert crypto.public_key_to_ssh(record.private.public_key()) == crypto.public_key_to_ssh(shared.public_key())
    with pytest.raises(ShareError):
        keyshare.open_key_payload(payload, carol, "x")


def test_public_share_and_refusals(keys):
    shared, bob, _ = keys
    payload = keyshare.build_key_payload(_record(shared), bob.public_key(), False, False)
    assert payload["private"] is None
    assert keyshare.open_key_payload(payload, bob, "x").private is None
    with pytest.raises(ShareError):
        keyshare.build_key_payload(_record(shared, private=False), bob.public_key(), True, False)
    with pytest.raises(ShareError):
        keyshare.open_key_payload(dict(payload, key_id="no key id"), bob, "x")
    with pytest.raises(ShareError):
        keyshare.open_key_payload("nope", bob, "x")


def test_tampered_private_blob_is_refused(keys):
    shared, bob, _ = keys
    payload = keyshare.build_key_payload(_record(shared), bob.public_key(), True, False)
    blob = bytearray(crypto.unb64(payload["private"]["blob"]))
    blob[-1] ^= 1
    payload["private"]["blob"] = crypto.b64(bytes(blob))
    with pytest.raises(ShareError):
        keyshare.open_key_payload(payload, bob, "x")


def test_audit_proofs(keys):
    shared, other, _ = keys
    challenge = keyshare.new_challenge()
    for is_private in (False, True):
        answer = keyshare.audit_answer(_record(shared), challenge, is_private)
        assert keyshare.audit_check(KEY_ID, shared.public_key(), challenge, is_private, answer)
        assert not keyshare.audit_check(KEY_ID, shared.public_key(), keyshare.new_challenge(), is_private, answer)
        wrong = keyshare.audit_answer(_record(other), challenge, is_private)
        assert not keyshare.audit_check(KEY_ID, shared.public_key(), challenge, is_private, wrong)
    with pytest.raises(ShareError):
        keyshare.audit_answer(_record(shared, private=False), challenge, True)
    assert not keyshare.audit_check(KEY_ID, shared.public_key(), challenge, True, {"signature": "!!"})
