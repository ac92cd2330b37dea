"""The keyring on disk: private files, reload, rename after a rotation, unreadable files."""

from __future__ import annotations

import stat

import pytest

from common import crypto
from common import ids
from services.identity.keyring import KeyRecord, Keyring

OWNER = ids.parse_global_id("alice@127.0.0.1_8084")


@pytest.fixture(scope="module")
def keys():
    return [crypto.generate_private_key(1024) for _ in range(2)]


def test_keys_persist_privately_and_reload(tmp_path, keys):
    ring = Keyring(tmp_path / "keys")
    ring.load()
    ring.set_master(keys[0])
    ring.set_master_label("main")
    ring.put(KeyRecord(key_id=OWNER.key_id("share1"), public=keys[1].public_key(), private=keys[1], label="cats"))
    for path in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700

    again = Keyring(tmp_path / "keys")
    again.load()
    assert crypto.public_key_to_ssh(again.master.public_key()) == crypto.public_key_to_ssh(keys[0].public_key())
    record = again.get("share1$alice@127.0.0.1_8084")
    assert record is not None and record.label == "cats" and record.private is not None
    master = again.master_record(OWNER)
    assert master.key_id == "master$alice@127.0.0.1_8084" and master.label == "main"


def test_info_has_the_reference_fields(tmp_path, keys):
    record = KeyRecord(key_id=OWNER.key_id("pub"), public=keys[1].public_key(), creator=OWNER.url)
    info = record.info()
    assert set(info) == {"active", "alias", "creator", "include_private", "is_public", "key_id", "label",
                         "private", "public", "size"}
    assert (info["alias"], info["is_public"], info["size"], info["private"]) == ("pub", True, "1024", None)
    private = KeyRecord(key_id=OWNER.key_id("p"), public=keys[1].public_key(), private=keys[1])
    assert private.info(include_private=True)["private"].startswith("-----BEGIN PRIVATE KEY-----")


def test_update_remove_and_rename_owner(tmp_path, keys):
    ring = Keyring(tmp_path / "keys")
    ring.load()
    ring.put(KeyRecord(key_id=OWNER.key_id("a"), public=keys[1].public_key(), private=keys[1]))
    ring.put(KeyRecord(key_id="b$bob@h_1", public=keys[0].public_key()))
    assert ring.update(OWNER.key_id("a"), active=False).active is False
    moved = ring.rename_owner(OWNER.global_id, "alice@10.0.0.1_9000", "http://10.0.0.1:9000/alice.xml")
    assert moved == [("a$alice@127.0.0.1_8084", "a$alice@10.0.0.1_9000")]
    again = Keyring(tmp_path / "keys")
    again.load()
    assert sorted(r.key_id for r in again.all()) == ["a$alice@10.0.0.1_9000", "b$bob@h_1"]
    assert again.get("a$alice@10.0.0.1_9000").active is False
    assert again.remove("b$bob@h_1") is not None and again.remove("b$bob@h_1") is None


def test_unreadable_key_files_are_skipped(tmp_path, keys):
    ring = Keyring(tmp_path / "keys")
    ring.load()
    ring.put(KeyRecord(key_id="ok$bob@h_1", public=keys[0].public_key()))
    (tmp_path / "keys" / "broken.key.json").write_text("{not json")
    again = Keyring(tmp_path / "keys")
    again.load()
    assert [r.key_id for r in again.all()] == ["ok$bob@h_1"]


def test_erase_master(tmp_path, keys):
    ring = Keyring(tmp_path / "keys")
    ring.load()
    ring.set_master(keys[0])
    ring.erase_master()
    again = Keyring(tmp_path / "keys")
    again.load()
    assert again.master is None and again.master_record(OWNER) is None
