"""The customer state's claim and its end, on a real folder."""

from __future__ import annotations

from pathlib import Path

from services.storage import customer_home
from services.storage.catalog import Catalog


def test_a_claim_names_the_key_and_survives_a_new_idurl(tmp_path: Path) -> None:
    folder = tmp_path / "customer"
    assert customer_home.owner_of(folder) is None
    alice = customer_home.owner_key("ssh-rsa AAAA alice")
    customer_home.claim(folder, alice)
    assert customer_home.owner_of(folder) == alice
    assert customer_home.owner_key("ssh-rsa AAAA alice") == alice != customer_home.owner_key("ssh-rsa AAAA bob")


def test_ending_the_state_leaves_an_empty_home_and_no_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "customer"
    catalog = Catalog(folder / "catalog.sqlite")
    catalog.create("master$alice@h_80", "docs/a.txt")
    catalog.close()
    customer_home.claim(folder, customer_home.owner_key("alice"))
    trash = customer_home.set_aside(folder)
    assert trash is not None and trash.parent == tmp_path and not folder.exists()
    # A crash before the delete: the next start removes what was set aside, nothing else.
    (tmp_path / "supplier").mkdir()
    customer_home.discard_set_aside(folder)
    assert not trash.exists() and (tmp_path / "supplier").is_dir()
    fresh = Catalog(folder / "catalog.sqlite")
    try:
        assert fresh.items() == []
    finally:
        fresh.close()
    assert customer_home.owner_of(folder) is None
    assert customer_home.set_aside(tmp_path / "absent") is None
