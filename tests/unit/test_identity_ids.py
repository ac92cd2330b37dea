"""IDURLs, global ids, key ids and the one helper that turns any user id into an IDURL."""

from __future__ import annotations

import pytest

from common.errors import InvalidArgumentError
from common import ids


def test_idurl_global_id_and_key_id_convert_both_ways():
    user = ids.parse_idurl("http://127.0.0.1:8084/alice.xml")
    assert (user.global_id, user.key_id(), user.key_id("share1"), user.server) == (
        "alice@127.0.0.1_8084", "master$alice@127.0.0.1_8084", "share1$alice@127.0.0.1_8084", "127.0.0.1:8084")
    assert ids.parse_global_id("alice@127.0.0.1_8084") == user
    assert ids.split_key_id("share1$alice@127.0.0.1_8084") == ("share1", user)


@pytest.mark.parametrize("user_id", ["http://127.0.0.1:8084/alice.xml", "alice@127.0.0.1_8084",
                                     "master$alice@127.0.0.1_8084", "group_1$alice@127.0.0.1_8084"])
def test_to_idurl_accepts_every_form(user_id):
    assert ids.to_idurl(user_id).url == "http://127.0.0.1:8084/alice.xml"


@pytest.mark.parametrize("user_id", ["", "alice", "http://h/alice.xml", "a$b$c@h_1", "Alice@h_1", "x@h_99999",
                                     "https://h:1/alice.xml"])
def test_to_idurl_refuses_malformed_ids(user_id):
    with pytest.raises(InvalidArgumentError):
        ids.to_idurl(user_id)


@pytest.mark.parametrize("name,ok", [("alice", True), ("node-0", True), ("a_b", True), ("ab", False),
                                     ("Alice", False), ("0abc", False), ("a" * 20, True), ("a" * 21, False),
                                     ("al ice", False), ("al/ce", False)])
def test_username_rules(name, ok):
    if ok:
        assert ids.check_username(name) == name
    else:
        with pytest.raises(InvalidArgumentError) as err:
            ids.check_username(name)
        assert err.value.status == 400


def test_normalize_server():
    assert ids.normalize_server("http://127.0.0.1:8084/") == "127.0.0.1:8084"
    assert ids.server_url("localhost:80", "bob") == "http://localhost:80/bob.xml"
    for bad in ("127.0.0.1", "h:0", "h:port", "a b:1", 5):
        with pytest.raises(InvalidArgumentError):
            ids.normalize_server(bad)


def test_the_route_to_a_seed_names_our_address():
    from services.identity.addresses import route_address as _route_address

    assert _route_address(["127.0.0.1"]) == "127.0.0.1"
    assert _route_address(["not a host name", "127.0.0.1"]) == "127.0.0.1"
    assert _route_address([]) is None
