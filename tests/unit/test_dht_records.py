"""Record schemas, envelopes and namespaces of the DHT (member lists: test_dht_members)."""

from __future__ import annotations

import time

import pytest

from common.errors import InvalidArgumentError
from services.dht import layers, records


def _env(**over):
    env = records.make_envelope(0, "skip_validation", "k", {"a": 1}, time.time() + 60, "ab" * 20)
    env.update(over)
    return env


def test_json_values_are_accepted_and_plain_strings_refused():
    assert records.parse_json_value({"a": 1}) == {"a": 1}
    assert records.parse_json_value('{"text": "x"}') == {"text": "x"}
    assert records.parse_json_value("[1, 2]") == [1, 2]
    assert records.parse_json_value(5) == 5
    with pytest.raises(InvalidArgumentError) as err:
        records.parse_json_value("anchor value 123")
    assert err.value.message == "input value must be a json"
    assert err.value.reason == "invalid_argument" and err.value.status == 400
    with pytest.raises(InvalidArgumentError):
        records.parse_json_value(True)


def test_layers_and_record_types_are_separate_namespaces():
    keys = {records.storage_key(0, "skip_validation", "k"), records.storage_key(3, "skip_validation", "k"),
            records.storage_key(0, "nickname", "k")}
    assert len(keys) == 3
    assert all(len(k) == 20 for k in keys)


def test_complete_data_adds_reference_fields():
    data = records.complete_data("skip_validation", "anchor_test_key", {"text": "x"})
    assert data == {"text": "x", "key": "anchor_test_key", "type": "skip_validation"}
    assert records.complete_data("skip_validation", "k", [1]) == [1]
    with pytest.raises(InvalidArgumentError):
        records.complete_data("nickname", "k", [1])
    assert "timestamp" in records.complete_data("nickname", "k", {})


def test_schema_requires_fields_and_type():
    good = records.complete_data("nickname", "bob:0", records.nickname_data("bob", 0, "http://h:1/bob.xml"))
    records.check_schema("nickname", good)
    with pytest.raises(records.RecordError) as err:
        records.check_schema("nickname", {k: v for k, v in good.items() if k != "idurl"})
    assert err.value.reason == "invalid_record"
    with pytest.raises(records.RecordError):
        records.check_schema("nickname", dict(good, type="suppliers"))
    with pytest.raises(InvalidArgumentError) as bad_type:
        records.kind("no_such_type")
    assert bad_type.value.reason == "invalid_record_type"


def test_signers_come_from_owner_fields():
    data = {"customer_idurl": "http://h:1/c.xml", "publisher_idurl": "http://h:1/s.xml"}
    assert records.allowed_signers("suppliers", data) == ["http://h:1/s.xml", "http://h:1/c.xml"]
    assert records.allowed_signers("nickname", {"idurl": "x"}) == ["x"]


def test_envelope_round_trip_and_rejections():
    env = _env()
    text = records.encode_envelope(env)
    assert records.decode_envelope(text) == env
    with pytest.raises(records.RecordError) as expired:
        records.decode_envelope(records.encode_envelope(_env(expire_at=time.time() - 1)))
    assert expired.value.reason == "expired_record"
    for junk in ("not json", "[]", '{"v": 2}', records.canonical(dict(env, layer_id="0")), b"\xff", 42):
        with pytest.raises(records.RecordError):
            records.decode_envelope(junk)
    with pytest.raises(InvalidArgumentError) as big:
        records.encode_envelope(_env(data="x" * 7000))
    assert big.value.reason == "value_too_large"


def test_signed_record_cannot_be_replaced_by_a_stranger():
    signed = _env(signature={"signer": "alice", "value": "c2ln"}, published=100.0)
    assert not records.may_replace(signed, _env(published=200.0))
    assert not records.may_replace(signed, _env(signature={"signer": "mallory", "value": "eA=="}, published=200.0))
    assert records.may_replace(signed, _env(signature={"signer": "alice", "value": "eA=="}, published=200.0))
    assert not records.may_replace(signed, _env(signature={"signer": "alice", "value": "eA=="}, published=50.0))
    assert records.may_replace(_env(published=1.0), _env(published=2.0))


def test_user_ids():
    assert records.idurl_from_id("alice@127.0.0.1_18084") == "http://127.0.0.1:18084/alice.xml"
    assert records.idurl_from_id("master$alice@127.0.0.1_18084") == "http://127.0.0.1:18084/alice.xml"
    assert records.idurl_from_id("http://h:1/a.xml") == "http://h:1/a.xml"
    assert records.global_id_from_idurl("http://127.0.0.1:18084/supplier1.xml") == "supplier1@127.0.0.1_18084"
    with pytest.raises(InvalidArgumentError):
        records.idurl_from_id("nobody")
    with pytest.raises(InvalidArgumentError):
        records.check_nickname("two words")


def test_attached_layers_follow_services_and_option():
    options = {"services/supplier/enabled": True, "services/customer/enabled": False,
               "services/entangled-dht/attached-layers": "5, x,7"}
    found = layers.attached_layers(lambda key: options.get(key, False))
    assert found == {layers.DEFAULT, layers.SUPPLIERS, 5, 7}
    with pytest.raises(ValueError):
        layers.check_layer_id(-1)
    assert layers.check_layer_id("3") == 3


def _claim(signer: str, published: float) -> dict:
    return {"signature": {"signer": signer}, "published": published, "data": {"idurl": signer}}


def test_claims_take_the_signer_most_nodes_hold_then_its_newest_copy():
    claims = records.Claims()
    assert claims.chosen() is None and not claims.decided(0) and claims.copies == 0
    for env in (_claim("alice", 10), _claim("bob", 50), _claim("alice", 30), _claim("alice", 20)):
        claims.add(env)
    assert claims.copies == 4 and claims.chosen() == _claim("alice", 30)
    assert claims.decided(1) and not claims.decided(2)  # 3 against 1: two more for bob could tie


def test_claims_held_equally_go_to_the_earlier_claim():
    claims = records.Claims()
    for env in (_claim("bob", 50), _claim("alice", 40), _claim("bob", 60), _claim("alice", 70)):
        claims.add(env)
    assert claims.chosen() == _claim("alice", 70) and not claims.decided(0)
