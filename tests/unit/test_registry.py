"""The method registry: 125 methods (the specification's 124, queue_streams_list), routes, typing, aliases."""

from __future__ import annotations

import pytest

from common.errors import InvalidArgumentError
from common.registry import load


def test_all_methods_with_owners():
    registry = load()
    assert len(registry) == 125
    assert {m.owner for m in registry} == {"api", "identity", "dht", "transport", "storage", "messaging", "ledger"}
    assert sum(1 for m in registry if m.ws_only) == 3


def test_route_matching_and_path_params():
    registry = load()
    method, params = registry.match("GET", "/config/get/services/customer/suppliers-number/v1")
    assert method.name == "config_get" and params == {"key1": "services", "key2": "customer",
                                                       "key3": "suppliers-number"}
    assert method.bind(params, from_text=True)["key"] == "services/customer/suppliers-number"
    assert registry.match("POST", "/process/health/v1") is False
    assert registry.match("GET", "/nope/v1") is None
    method, params = registry.match("POST", "/service/restart/service_supplier/v1")
    assert method.name == "service_restart" and params == {"service_name": "service_supplier"}


def test_binding_types_from_text():
    method = load().get("configs_list")
    assert method.bind({"sort": "true", "include_info": "0"}, from_text=True) == {"sort": True, "include_info": False}
    with pytest.raises(InvalidArgumentError):
        method.bind({"sort": "perhaps"}, from_text=True)
    restart = load().get("service_restart")
    assert restart.bind({"service_name": "x", "wait_timeout": "2.5"}, from_text=True)["wait_timeout"] == 2.5
    with pytest.raises(InvalidArgumentError):
        restart.bind({"service_name": "x", "wait_timeout": "soon"}, from_text=True)
    with pytest.raises(InvalidArgumentError, match="service_name"):
        restart.bind({}, from_text=True)


def test_lists_json_and_aliases():
    create = load().get("identity_create")
    assert create.bind({"username": "a", "preferred_servers": "h:1,h:2"}, True)["preferred_servers"] == ["h:1", "h:2"]
    dht_set = load().get("dht_value_set")
    assert dht_set.bind({"key": "k", "value": '{"a": 1}'}, True)["value"] == {"a": 1}
    assert dht_set.bind({"key": "k", "value": "plain"}, True)["value"] == "plain"
    status = load().get("user_status")
    assert status.bind({"id": "alice@host_1"}, True) == {"user_id": "alice@host_1"}
    download = load().get("file_download_start")
    assert download.bind({"remote_path": "p", "destination_folder": "/tmp"}, False)["destination_path"] == "/tmp"
    assert "api_secret" not in load().get("process_health").bind({"api_secret": "s"}, True)


def test_unknown_parameters_are_refused_not_dropped():
    dht = load().get("suppliers_list_dht")
    assert dht.bind({"id": "alice@host_1"}, True) == {"customer_id": "alice@host_1"}
    with pytest.raises(InvalidArgumentError, match="unknown parameter nope") as caught:
        dht.bind({"nope": "1"}, True)
    assert caught.value.reason == "unknown_parameter"
    assert load().get("service_restart").bind({"service_name": "x"}, True) == {"service_name": "x"}
