"""Reference parameter names: aliases, names with no effect, unknown names, and their OpenAPI document."""

from __future__ import annotations

import pytest

from common import registry
from common.errors import InvalidArgumentError
from common.registry import load
from services.api.openapi import openapi_document

# (method, what a reference client sends, what our method receives): one row per name the
# reference REST handlers read under another name than ours.
REFERENCE_CALLS = [
    ("message_send", {"id": "bob@h_1", "data": {"t": 1}}, {"recipient_id": "bob@h_1", "data": {"t": 1}}),
    ("message_send", {"idurl": "http://h:1/bob.xml", "data": "x"}, {"recipient_id": "http://h:1/bob.xml", "data": "x"}),
    ("message_send", {"global_id": "bob@h_1", "data": "x"}, {"recipient_id": "bob@h_1", "data": "x"}),
    ("message_history", {"id": "bob@h_1"}, {"recipient_id": "bob@h_1"}),
    ("friend_add", {"idurl": "http://h:1/bob.xml", "alias": "Bob"},
     {"trusted_user_id": "http://h:1/bob.xml", "alias": "Bob"}),
    ("friend_add", {"id": "bob@h_1"}, {"trusted_user_id": "bob@h_1"}),
    ("friend_remove", {"global_id": "bob@h_1"}, {"user_id": "bob@h_1"}),
    ("share_grant", {"key_id": "k", "trusted_global_id": "bob@h_1"}, {"key_id": "k", "trusted_user_id": "bob@h_1"}),
    ("share_grant", {"key_id": "k", "trusted_idurl": "u"}, {"key_id": "k", "trusted_user_id": "u"}),
    ("share_grant", {"key_id": "k", "trusted_id": "u"}, {"key_id": "k", "trusted_user_id": "u"}),
    ("group_share", {"group_key_id": "g", "trusted_id": "b@h_1"}, {"group_key_id": "g", "trusted_user_id": "b@h_1"}),
    ("group_share", {"key_id": "g", "trusted_global_id": "b"}, {"group_key_id": "g", "trusted_user_id": "b"}),
    ("identity_recover", {"private_key_local_file": "/tmp/key.txt"}, {"private_key_source": "/tmp/key.txt"}),
    ("identity_backup", {"destination_path": "/tmp/b"}, {"destination_filepath": "/tmp/b"}),
    ("identity_get", {"xml_source": "1"}, {"include_xml_source": True}),
    ("key_create", {"alias": "work", "key_size": "1024"}, {"key_alias": "work", "key_size": 1024}),
    ("suppliers_list_dht", {"id": "alice@h_1"}, {"customer_id": "alice@h_1"}),
    ("suppliers_list_dht", {"customer_idurl": "http://h:1/alice.xml"}, {"customer_id": "http://h:1/alice.xml"}),
    ("suppliers_list", {"customer_idurl": "u", "verbose": "1"}, {"customer_id": "u", "verbose": True}),
    ("customer_reject", {"idurl": "u"}, {"customer_id": "u"}),
    ("supplier_change", {"index": "2", "new_idurl": "u"}, {"position": 2, "new_supplier_id": "u"}),
    ("supplier_change", {"pos": "1", "supplier_glob_id": "s", "new_global_id": "n"},
     {"position": 1, "supplier_id": "s", "new_supplier_id": "n"}),
    ("supplier_change", {"supplier_idurl": "s"}, {"supplier_id": "s"}),
    ("user_ping", {"id": "bob@h_1", "timeout": "30", "retries": "2"}, {"user_id": "bob@h_1", "timeout": 30.0,
                                                                       "retries": 2}),
    ("user_status", {"idurl": "u"}, {"user_id": "u"}),
    ("user_status_check", {"global_id": "g"}, {"user_id": "g"}),
    ("group_info_dht", {"group_creator_idurl": "u"}, {"group_creator_id": "u"}),
    ("group_info_dht", {"id": "alice@h_1"}, {"group_creator_id": "alice@h_1"}),
    ("files_list", {"uploads": "1", "downloads": "0"}, {"include_uploads": True, "include_downloads": False}),
    ("file_info", {"remote_path": "p", "uploads": "0"}, {"remote_path": "p", "include_uploads": False}),
    ("files_uploads", {"running": "0", "pending": "1"}, {"include_running": False, "include_pending": True}),
    ("shares_list", {"active": "1", "mine": "0", "granted": "1"},
     {"only_active": True, "include_mine": False, "include_granted": True}),
    ("file_download_start", {"remote_path": "p", "destination_folder": "/d"}, {"remote_path": "p",
                                                                               "destination_path": "/d"}),
    ("dht_node_find", {"dht_id": "abc"}, {"node_id_64": "abc"}),
]


@pytest.mark.parametrize(("name", "sent", "received"), REFERENCE_CALLS)
def test_reference_names_reach_our_parameters(name, sent, received):
    assert load().get(name).bind(sent, from_text=True) == received


def test_every_alias_names_a_real_parameter_and_shadows_none():
    reg = load()
    for table in (registry._ALIASES, registry._NO_EFFECT, registry._BODY_PARAM):
        assert set(table) <= set(reg.methods), set(table) - set(reg.methods)
    for method in reg:
        own = {p.name for p in method.params}
        assert set(method.aliases.values()) <= own, method.name
        assert not (set(method.aliases) & own), method.name
        assert not (set(method.no_effect) & (own | set(method.aliases))), method.name


def test_our_name_wins_over_an_alias_and_the_first_alias_over_the_next():
    send = load().get("message_send")
    assert send.bind({"recipient_id": "ours", "id": "theirs", "data": 1}, False)["recipient_id"] == "ours"
    assert send.bind({"id": "last", "global_id": "first", "data": 1}, False)["recipient_id"] == "first"


def test_unknown_parameter_is_refused_with_the_accepted_names():
    with pytest.raises(InvalidArgumentError) as caught:
        load().get("process_health").bind({"verbose": "1"}, from_text=True)
    assert caught.value.reason == "unknown_parameter" and caught.value.status == 400
    assert "verbose" in caught.value.message
    with pytest.raises(InvalidArgumentError) as caught:
        load().get("suppliers_list_dht").bind({"customer": "x"}, from_text=True)
    assert caught.value.reason == "unknown_parameter"
    for name in ("customer", "customer_id", "customer_idurl", "id"):
        assert name in caught.value.message


def test_names_with_no_effect_and_the_secret_are_accepted_and_dropped():
    reg = load()
    assert reg.get("files_sync").bind({"force": "1"}, True) == {}
    upload = reg.get("file_upload_start").bind({"local_path": "/a", "remote_path": "r", "open_share": "1",
                                                "wait_result": "1"}, False)
    assert upload == {"local_path": "/a", "remote_path": "r", "wait_result": True}
    assert "timeout" not in reg.get("message_send").bind({"id": "b", "data": 1, "timeout": 30}, False)
    assert reg.get("process_health").bind({"api_secret": "s"}, True) == {}


def test_option_key_parts_from_the_path():
    config_set = load().get("config_set")
    assert config_set.bind({"key1": "a", "key2": "b", "value": "1"}, True) == {"key": "a/b", "value": 1}


def test_event_send_takes_a_whole_reference_body_as_data():
    send = load().get("event_send")
    assert send.adopt_body({"color": "red"}) == {"data": {"color": "red"}}
    assert send.adopt_body({"data": {"color": "red"}}) == {"data": {"color": "red"}}
    assert send.adopt_body({}) == {}
    assert load().get("message_send").adopt_body({"whatever": 1}) == {"whatever": 1}


def test_openapi_shows_every_alias_and_stays_well_formed():
    doc = openapi_document(load())
    assert doc["openapi"].startswith("3.0")
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    query = {p["name"]: p for p in doc["paths"]["/supplier/list/dht/v1"]["get"]["parameters"]}
    assert query["id"]["x-alias-of"] == "customer_id" and query["customer_idurl"]["x-alias-of"] == "customer_id"
    status = {p["name"]: p for p in doc["paths"]["/user/status/v1"]["get"]["parameters"]}
    assert status["user_id"]["required"] is False and "id" in status["user_id"]["description"]
    body = doc["paths"]["/message/send/v1"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["id"]["x-alias-of"] == "recipient_id"
    assert {"required": ["id"]} in body["allOf"][0]["anyOf"]
    assert body["properties"]["timeout"]["deprecated"] is True
    recover = doc["paths"]["/identity/recover/v1"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert recover["properties"]["private_key_local_file"]["x-alias-of"] == "private_key_source"
    for ops in doc["paths"].values():
        for op in ops.values():
            for param in op["parameters"]:
                assert "schema" in param and param["in"] in ("query", "path"), param
