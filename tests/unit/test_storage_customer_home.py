"""The customer state's claim and its end, on a real folder."""

from __future__ import annotations

from pathlib import Path

from services.storage import customer_home
from services.storage.catalog import Catalog


ALICE = {"idurl": "http://h:80/alice.xml", "publickey": "ssh-rsa AAAA alice", "sources": ["http://h:80/alice.xml"]}


def test_a_claim_is_the_idurl_and_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "customer"
    assert customer_home.owner_of(folder) is None
    customer_home.claim(folder, ALICE)
    claim = customer_home.owner_of(folder)
    assert claim == customer_home.claim_of(ALICE) and customer_home.same_owner(claim, ALICE)
    rotated = dict(ALICE, idurl="http://k:80/alice.xml", sources=["http://k:80/alice.xml", "http://h:80/alice.xml"])
    assert customer_home.same_owner(claim, rotated)
    # A new identity made with the kept key (erase without erasing the key, then create): another owner.
    carol = dict(ALICE, idurl="http://h:80/carol.xml", sources=["http://h:80/carol.xml"])
    assert not customer_home.same_owner(claim, carol)
    assert not customer_home.same_owner(claim, dict(ALICE, publickey="ssh-rsa BBBB mallory"))


def test_ending_the_state_leaves_an_empty_home_and_no_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "customer"
    catalog = Catalog(folder / "catalog.sqlite")
    catalog.create("master$alice@h_80", "docs/a.txt")
    catalog.close()
    customer_home.claim(folder, ALICE)
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
