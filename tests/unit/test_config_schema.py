"""The config schema and store: validation, persistence, tree."""

from __future__ import annotations

import os

import pytest

from common.config_schema import GIB, MIB, validate
from common.config_store import ConfigStore
from common.errors import InvalidArgumentError, NotFoundError


def test_validation_by_type():
    assert validate("services/customer/suppliers-number", "4") == 4
    with pytest.raises(InvalidArgumentError):
        validate("services/customer/suppliers-number", 5)
    assert validate("interface/api/rest-http-port", 9000) == 9000
    for bad in (0, 70000, "abc", True, 1.5):
        with pytest.raises(InvalidArgumentError):
            validate("interface/api/rest-http-port", bad)
    assert validate("services/backups/block-size", "4 MB") == 4 * MIB
    assert validate("services/supplier/donated-space", "2GiB") == 2 * GIB
    assert validate("services/supplier/enabled", "false") is False
    with pytest.raises(InvalidArgumentError):
        validate("services/supplier/enabled", "maybe")
    with pytest.raises(NotFoundError):
        validate("no/such/key", 1)
    with pytest.raises(InvalidArgumentError):
        validate("personal/private-key-size", 1000)


def test_store_persists_atomically(tmp_path):
    path = tmp_path / "config" / "options.json"
    store = ConfigStore(path)
    assert store.get("services/customer/suppliers-number") == 2
    store.set("services/customer/suppliers-number", 7)
    assert ConfigStore(path).get("services/customer/suppliers-number") == 7
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(InvalidArgumentError):
        store.set_many({"services/customer/suppliers-number": 4, "interface/api/rest-http-port": -1})
    assert ConfigStore(path).get("services/customer/suppliers-number") == 7


def test_corrupt_file_falls_back_to_defaults(tmp_path):
    path = tmp_path / "options.json"
    path.write_text("{broken")
    assert ConfigStore(path).get("interface/api/rest-http-port") == 8180


def test_tree_and_describe(tmp_path):
    store = ConfigStore(tmp_path / "o.json")
    tree = store.tree(include_info=True)
    assert set(tree) == {"interface", "logs", "paths", "personal", "services"}
    leaf = tree["services"]["customer"]["suppliers-number"]
    assert leaf["possible_values"] == [2, 4, 7, 13, 18, 26, 64] and leaf["value"] == 2
    assert store.describe("interface/api/auth-secret-enabled")["default"] == "true"


def test_include_info_adds_the_help_text(tmp_path):
    store = ConfigStore(tmp_path / "o.json")
    plain = store.describe("services/customer/suppliers-number")
    assert "info" not in plain
    described = store.describe("services/customer/suppliers-number", include_info=True)
    assert described["info"].startswith("number of suppliers") and "one of 2, 4, 7" in described["info"]
    assert "from 1 to 65535" in store.describe("interface/api/rest-http-port", True)["info"]
    assert "info" not in store.tree(include_info=False)["interface"]["api"]["rest-http-port"]
    assert "info" in store.tree(include_info=True)["interface"]["api"]["rest-http-port"]
