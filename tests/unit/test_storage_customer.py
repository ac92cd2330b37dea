"""The customer role's pure parts, with a fake supplier on the other end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.errors import NodeError
from services.storage import customer as customer_module
from services.storage.customer import Customer


class PagedSupplier:
    """Answers ListFiles in pages of `page` names, as a supplier does with `truncated` and `after`."""

    wire = None

    def __init__(self, names: list[str], page: int):
        self.names = sorted(names)
        self.page = page
        self.calls: list[dict[str, Any]] = []

    async def request(self, idurl: str, command: str, payload: Any, timeout: float) -> dict[str, Any]:
        assert command == "ListFiles"
        self.calls.append(dict(payload))
        rest = [n for n in self.names if n > payload.get("after", "")]
        files = [{"name": n, "size": 1, "sha256": ""} for n in rest[: self.page]]
        return {"command": "Ack", "payload": {"files": files, "truncated": len(rest) > self.page}}


async def _no_event(_event: str, _data: dict[str, Any]) -> None:
    return None


def _customer(tmp_path: Path, peers: Any) -> Customer:
    return Customer(tmp_path / "customer", tmp_path / "spool", peers, None, lambda key: 4, _no_event)


def test_listing_follows_the_cursor_to_the_last_page(tmp_path: Path) -> None:
    names = [f"tag.v{i:05d}.0.0" for i in range(25)]
    peers = PagedSupplier(names, page=10)
    customer = _customer(tmp_path, peers)
    try:
        assert set(asyncio.run(customer._listing("http://s/x.xml"))) == set(names)
    finally:
        customer.close()
    assert [c.get("after", "") for c in peers.calls] == ["", names[9], names[19]]


def test_listing_stops_at_the_page_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(customer_module, "MAX_LISTING_PAGES", 2)
    customer = _customer(tmp_path, PagedSupplier([f"n{i:03d}" for i in range(50)], page=10))
    try:
        with pytest.raises(NodeError) as caught:
            asyncio.run(customer._listing("http://s/x.xml"))
    finally:
        customer.close()
    assert caught.value.reason == "listing_too_long"


def test_preferred_suppliers_accept_idurls_and_global_ids(tmp_path: Path) -> None:
    options = {"services/customer/suppliers-number": 4,
               "services/employer/candidates": " http://h:8084/alice.xml, bob@h_8084 ,, not an id "}
    customer = Customer(tmp_path / "customer", tmp_path / "spool", PagedSupplier([], 1), None, options.get,
                        _no_event)
    try:
        assert customer.employer.preferred() == ["http://h:8084/alice.xml", "http://h:8084/bob.xml"]
    finally:
        customer.close()


def test_rotation_renames_our_keys_and_keeps_fragment_names(tmp_path: Path) -> None:
    from services.storage.catalog import Catalog
    from services.storage.fragments import fragment_name

    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.create("master$alice@old.host_80", "docs/a.txt")
    catalog.create("share_x$alice@old.host_80", "b.txt")
    catalog.create("share_y$bob@old.host_80", "c.txt", owner_idurl="http://old.host:80/bob.xml")
    renamed = catalog.rename_owner("alice@old.host_80", "alice@new.host_81")
    assert sorted(renamed) == [("master$alice@old.host_80", "master$alice@new.host_81"),
                               ("share_x$alice@old.host_80", "share_x$alice@new.host_81")]
    assert catalog.item("master$alice@new.host_81", "docs/a.txt") is not None
    assert catalog.item("share_y$bob@old.host_80", "c.txt") is not None  # someone else's share stays
    before, after = "master$alice@old.host_80", "master$alice@new.host_81"
    assert fragment_name(before, "v1", 0, 0) == fragment_name(after, "v1", 0, 0)
    assert fragment_name("master$alice@h_1", "v1", 0, 0) != fragment_name("share_x$alice@h_1", "v1", 0, 0)
