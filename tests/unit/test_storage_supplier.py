"""The supplier role on real files: contracts, durable stores, access rules, crash recovery."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from common.automat import AutomatRegistry
from common.errors import NotFoundError
from services.storage.fragment_store import folder_name
from services.storage.supplier import SupplierRole, percent

ALICE = "http://id.test/alice.xml"
BOB = "http://id.test/bob.xml"
CAROL = "http://id.test/carol.xml"


class Node:
    """A supplier with its state folder and a spool folder on the same filesystem."""

    def __init__(self, tmp_path: Path, donated: int = 10_000, automats: AutomatRegistry | None = None):
        self.root = tmp_path / "state" / "storage" / "supplier"
        self.spool = tmp_path / "spool"
        self.spool.mkdir(exist_ok=True)
        self.donated = donated
        self.automats = automats
        self.nonce = 0
        self.role = self.open()

    def open(self) -> SupplierRole:
        return SupplierRole(self.root, lambda: self.donated, clock=lambda: 1000.0, automats=self.automats)

    def reopen(self) -> SupplierRole:
        self.role.close()
        self.role = self.open()
        return self.role

    async def ask(self, command: str, creator: str, payload: Any = None, **extra: Any) -> dict[str, Any]:
        self.nonce += 1
        doc = {"command": command, "owner_idurl": creator, "creator_idurl": creator,
               "packet_id": f"req:{self.nonce}", "key_id": f"master${creator}", "date": "2024-01-01", **extra}
        if payload is not None:
            doc["payload"] = payload
        return await self.role.on_inbox(doc)

    async def hire(self, creator: str, needed: int, **more: Any) -> dict[str, Any]:
        payload = {"service": "supplier", "needed_bytes": needed, "ecc_map": "ecc/4x4", "position": 1, **more}
        return await self.ask("RequestService", creator, payload)

    def spooled(self, data: bytes) -> Path:
        self.nonce += 1
        path = self.spool / f"in-{self.nonce}"
        path.write_bytes(data)
        return path

    async def put(self, creator: str, name: str, data: bytes, *, path: Path | None = None,
                  size: int | None = None, sha256: str | None = None) -> dict[str, Any]:
        path = path or self.spooled(data)
        self.nonce += 1
        return await self.role.on_inbox({
            "command": "Data", "owner_idurl": creator, "creator_idurl": creator,
            "packet_id": f"{name}:{self.nonce}", "key_id": f"master${creator}", "date": "2024-01-01",
            "binary": True, "payload_path": str(path),
            "payload_sha256": sha256 or hashlib.sha256(data).hexdigest(),
            "payload_size": len(data) if size is None else size,
        })

    def final(self, creator: str, name: str) -> Path:
        return self.root / "fragments" / folder_name(creator) / name


@pytest.fixture
def node(tmp_path: Path):
    made = Node(tmp_path)
    yield made
    made.role.close()


def reason(reply: dict[str, Any]) -> str:
    assert reply["command"] == "Fail", reply
    return reply["payload"]["reason"]


def ack(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["command"] == "Ack", reply
    return reply["payload"]


async def test_contracts_fit_in_donated_space(node: Node):
    node.donated = 1000
    assert ack(await node.hire(ALICE, 600)) == {"accepted": True, "allocated": 600, "used": 0}
    assert reason(await node.hire(BOB, 500)) == "over_donated_space"
    assert ack(await node.hire(BOB, 400))["allocated"] == 400
    # A re-request replaces the allocation, but never below what is already stored.
    assert ack(await node.hire(ALICE, 300))["allocated"] == 300
    ack(await node.put(ALICE, "blk.0", b"x" * 250))
    assert ack(await node.hire(ALICE, 100)) == {"accepted": True, "allocated": 250, "used": 250}
    for bad in (0, -5, "5", True, 1 << 60, None):
        assert reason(await node.hire(CAROL, bad)) == "invalid_request"
    assert reason(await node.hire(CAROL, 10, ecc_map="ecc/4x5")) == "invalid_request"
    assert reason(await node.hire(CAROL, 10, position=4)) == "invalid_request"
    assert reason(await node.ask("RequestService", CAROL, {"service": "nope"})) == "invalid_request"

    assert node.role.customers() == [
        {"idurl": ALICE, "allocated": 250, "used": 250, "since": 1000.0, "ecc_map": "ecc/4x4", "position": 1},
        {"idurl": BOB, "allocated": 400, "used": 0, "since": 1000.0, "ecc_map": "ecc/4x4", "position": 1},
    ]
    report = node.role.space_donated()
    assert report["consumed"] == 650 and report["free"] == 350 and report["donated"] == 1000
    assert report["used"] == report["real"] == 250 and report["customers_num"] == 2
    assert report["consumed_percent"] == "65%" and report["used_percent"] == "25%"
    assert report["customers"][0] == {"consumed": 250, "idurl": ALICE, "real": 250, "used": 250}
    assert report["old_customers"] == [] and report["old_customers_used"] == report["old_customers_real"] == 0


def test_percent_is_the_reference_text():
    assert percent(200, 1000) == "20%"
    assert percent(35672, 10_000_000) == "0.35672%"
    assert percent(0, 1000) == "0%"
    assert percent(5, 0) == "0%"


async def test_store_then_retrieve_and_overwrite(node: Node):
    ack(await node.hire(ALICE, 1000))
    spool = node.spooled(b"fragment-one")
    stored = ack(await node.put(ALICE, "F123.0-1-Data", b"fragment-one", path=spool))
    assert stored == {"name": "F123.0-1-Data", "size": 12, "sha256": hashlib.sha256(b"fragment-one").hexdigest()}
    assert not spool.exists()  # moved, not copied
    reply = await node.ask("Retrieve", ALICE, {"name": "F123.0-1-Data"})
    assert reply == {"command": "Data", "payload_path": str(node.final(ALICE, "F123.0-1-Data"))}
    assert Path(reply["payload_path"]).read_bytes() == b"fragment-one"
    assert "payload_sha256" not in reply

    ack(await node.put(ALICE, "F123.0-1-Data", b"v2"))
    assert node.final(ALICE, "F123.0-1-Data").read_bytes() == b"v2"
    assert node.role.used_bytes(ALICE) == 2
    v2 = {"name": "F123.0-1-Data", "size": 2, "sha256": hashlib.sha256(b"v2").hexdigest()}
    assert node.role.objects(ALICE) == [v2]
    assert reason(await node.ask("Retrieve", ALICE, {"name": "F999"})) == "not_found"


async def test_over_quota_leaves_nothing_under_a_final_name(node: Node):
    ack(await node.hire(ALICE, 100))
    spool = node.spooled(b"y" * 150)
    assert reason(await node.put(ALICE, "big", b"y" * 150, path=spool)) == "over_quota"
    assert not node.final(ALICE, "big").exists() and spool.exists()
    ack(await node.put(ALICE, "obj", b"a" * 80))
    # Replacing an object counts only the difference.
    ack(await node.put(ALICE, "obj", b"b" * 100))
    assert reason(await node.put(ALICE, "other", b"c")) == "over_quota"
    assert [p.name for p in node.final(ALICE, "x").parent.iterdir()] == ["obj"]
    assert node.role.stats() == {"over_quota": 2}


async def test_concurrent_writes_cannot_overrun_the_quota(node: Node):
    ack(await node.hire(ALICE, 100))
    replies = await asyncio.gather(*(node.put(ALICE, f"o{i}", b"z" * 40) for i in range(5)))
    assert sum(r["command"] == "Ack" for r in replies) == 2
    assert node.role.used_bytes(ALICE) == 80


async def test_bad_names_and_payloads_are_refused(node: Node):
    ack(await node.hire(ALICE, 1000))
    for name in ("../x", ".hidden", "a/b", "", "x" * 201, "a\nb", "é"):
        assert reason(await node.put(ALICE, name, b"d")) == "bad_name", name
    assert reason(await node.ask("Retrieve", ALICE, {"name": "../../supplier.sqlite"})) == "bad_name"
    assert reason(await node.ask("ListFiles", ALICE, {"prefix": "../"})) == "bad_name"

    assert reason(await node.put(ALICE, "m", b"d", path=node.spool / "missing")) == "bad_payload"
    assert reason(await node.put(ALICE, "s", b"data", size=3)) == "bad_payload"
    assert reason(await node.put(ALICE, "h", b"data", sha256="0" * 63)) == "invalid_request"
    ack(await node.put(ALICE, "mine", b"data"))
    # A payload path inside the store (another object) is never moved.
    assert reason(await node.put(ALICE, "steal", b"data", path=node.final(ALICE, "mine"))) == "bad_payload"
    assert node.final(ALICE, "mine").exists()
    assert reason(await node.put(BOB, "x", b"d")) == "not_a_customer"
    assert sorted(p.name for p in node.final(ALICE, "x").parent.iterdir()) == ["mine"]


async def test_the_transports_hash_is_recorded_not_recomputed(node: Node):
    # The transport hashed the bytes as they arrived and checked that hash against the sender's
    # signature; the supplier indexes it as given instead of reading the file back.
    ack(await node.hire(ALICE, 1000))
    claimed = hashlib.sha256(b"as signed").hexdigest()
    assert ack(await node.put(ALICE, "f", b"as spooled", sha256=claimed))["sha256"] == claimed
    assert node.final(ALICE, "f").read_bytes() == b"as spooled"


async def test_malformed_documents_fail_without_raising(node: Node):
    assert reason(await node.role.on_inbox("nope")) == "invalid_request"  # type: ignore[arg-type]
    assert reason(await node.role.on_inbox({"command": "Retrieve"})) == "invalid_request"
    assert reason(await node.ask("Identity", ALICE, {})) == "unknown_command"
    assert reason(await node.ask("Retrieve", ALICE, ["x"])) == "invalid_request"
    assert reason(await node.ask("DeleteFile", ALICE, {"names": "x"})) == "invalid_request"
    assert reason(await node.ask("DeleteFile", ALICE, {"names": ["a"] * 10_001})) == "invalid_request"
    assert reason(await node.ask("Data", ALICE, {"x": 1})) == "invalid_request"
    assert node.role.stats() == {"invalid_request": 6, "unknown_command": 1}


async def test_a_customer_cannot_touch_another_customers_objects(node: Node):
    ack(await node.hire(ALICE, 1000))
    ack(await node.hire(BOB, 1000))
    ack(await node.put(ALICE, "secret", b"alice"))
    assert reason(await node.ask("Retrieve", BOB, {"name": "secret", "customer_idurl": ALICE})) == "forbidden"
    assert reason(await node.ask("ListFiles", BOB, {"customer_idurl": ALICE})) == "forbidden"
    assert reason(await node.ask("Retrieve", BOB, {"name": "secret"})) == "not_found"
    assert ack(await node.ask("ListFiles", BOB, {})) == {"files": [], "truncated": False}
    # Deletes always act on the sender's own objects.
    assert ack(await node.ask("DeleteFile", BOB, {"names": ["secret"], "customer_idurl": ALICE})) == {"deleted": 0}
    assert ack(await node.ask("DeleteBackup", BOB, {"prefix": "sec"})) == {"deleted": 0}
    assert node.final(ALICE, "secret").read_bytes() == b"alice"
    # A stranger learns nothing, not even whether someone is a customer.
    assert reason(await node.ask("Retrieve", CAROL, {"name": "secret", "customer_idurl": ALICE})) == "forbidden"
    assert reason(await node.ask("Retrieve", CAROL, {"name": "x", "customer_idurl": "nobody"})) == "forbidden"
    assert reason(await node.ask("ListFiles", CAROL, {})) == "not_a_customer"


async def test_grants_allow_reading_by_prefix_only(node: Node):
    ack(await node.hire(ALICE, 1000))
    for name in ("shared.a.1", "shared.a.2", "shared.b.1", "private.1"):
        ack(await node.put(ALICE, name, name.encode()))
    grant = {"service": "supplier_access", "grantee_idurl": BOB, "prefix": "shared.a"}
    assert reason(await node.ask("RequestService", CAROL, grant)) == "not_a_customer"
    assert ack(await node.ask("RequestService", ALICE, grant))["granted"] is True

    reply = await node.ask("Retrieve", BOB, {"name": "shared.a.2", "customer_idurl": ALICE})
    assert Path(reply["payload_path"]).read_bytes() == b"shared.a.2"
    assert reason(await node.ask("Retrieve", BOB, {"name": "private.1", "customer_idurl": ALICE})) == "forbidden"
    assert reason(await node.ask("Retrieve", BOB, {"name": "shared.b.1", "customer_idurl": ALICE})) == "forbidden"
    listed = ack(await node.ask("ListFiles", BOB, {"customer_idurl": ALICE}))["files"]
    assert [f["name"] for f in listed] == ["shared.a.1", "shared.a.2"]
    listed = ack(await node.ask("ListFiles", BOB, {"customer_idurl": ALICE, "prefix": "shared.a.2"}))["files"]
    assert [f["name"] for f in listed] == ["shared.a.2"]
    assert ack(await node.ask("ListFiles", BOB, {"customer_idurl": ALICE, "prefix": "private"}))["files"] == []
    assert reason(await node.ask("Retrieve", CAROL, {"name": "shared.a.1", "customer_idurl": ALICE})) == "forbidden"

    ack(await node.ask("RequestService", ALICE, {**grant, "revoke": True}))
    assert reason(await node.ask("Retrieve", BOB, {"name": "shared.a.1", "customer_idurl": ALICE})) == "forbidden"


async def test_delete_file_and_delete_backup(node: Node):
    ack(await node.hire(ALICE, 1000))
    for name in ("b1.0", "b1.1", "b10.0", "b2.0"):
        ack(await node.put(ALICE, name, b"1234"))
    assert ack(await node.ask("DeleteFile", ALICE, {"names": ["b2.0", "nothing"]})) == {"deleted": 1}
    assert not node.final(ALICE, "b2.0").exists()
    assert ack(await node.ask("DeleteBackup", ALICE, {"prefix": "b1."})) == {"deleted": 2}
    assert [o["name"] for o in node.role.objects(ALICE)] == ["b10.0"]
    assert node.role.used_bytes(ALICE) == 4
    assert reason(await node.ask("DeleteBackup", ALICE, {"prefix": ""})) == "bad_name"
    assert reason(await node.ask("DeleteFile", ALICE, {"names": ["../b10.0"]})) == "bad_name"
    assert reason(await node.ask("DeleteFile", BOB, {"names": []})) == "not_a_customer"


async def test_reject_and_cancel_erase_everything(tmp_path: Path):
    registry = AutomatRegistry()
    node = Node(tmp_path, automats=registry)
    ack(await node.hire(ALICE, 1000))
    ack(await node.hire(BOB, 1000))
    assert [m.state for m in registry.all()] == ["SERVING", "SERVING"]
    ack(await node.put(ALICE, "a", b"alice"))
    ack(await node.put(BOB, "b", b"bob"))
    ack(await node.ask("RequestService", ALICE, {"service": "supplier_access", "grantee_idurl": BOB, "prefix": ""}))

    assert await node.role.reject(ALICE) == {"idurl": ALICE, "rejected": True, "deleted": 1, "freed": 5}
    assert not node.final(ALICE, "a").parent.exists()
    assert reason(await node.ask("Retrieve", ALICE, {"name": "a"})) == "not_a_customer"
    assert reason(await node.ask("Retrieve", BOB, {"name": "a", "customer_idurl": ALICE})) == "forbidden"
    with pytest.raises(NotFoundError):
        await node.role.reject(ALICE)

    assert ack(await node.ask("CancelService", BOB, {})) == {"cancelled": True, "deleted": 1}
    assert ack(await node.ask("CancelService", BOB)) == {"cancelled": False, "deleted": 0}
    assert node.role.customers() == [] and registry.all() == []
    assert list((node.root / "fragments").iterdir()) == []
    # A former customer starts from nothing.
    assert ack(await node.hire(ALICE, 10)) == {"accepted": True, "allocated": 10, "used": 0}
    node.role.close()


async def test_reconcile_after_a_crash(node: Node):
    ack(await node.hire(ALICE, 5_000))
    ack(await node.hire(BOB, 1_000))
    ack(await node.put(ALICE, "kept", b"kept"))
    ack(await node.put(ALICE, "lost", b"lost"))
    ack(await node.put(ALICE, "landed", b"old"))
    node.role.close()

    # Renamed durably, killed before the row: the file alone is the truth.
    node.final(ALICE, "renamed").write_bytes(b"renamed")
    # A delete cut short after the unlink.
    node.final(ALICE, "lost").unlink()
    # A pending row whose rename happened, and one whose rename did not.
    node.final(ALICE, "landed").write_bytes(b"new")
    db = sqlite3.connect(node.root / "supplier.sqlite")
    db.execute("INSERT INTO pending VALUES (?,?,?,?)", (ALICE, "landed", 3, hashlib.sha256(b"new").hexdigest()))
    db.execute("INSERT INTO pending VALUES (?,?,?,?)", (ALICE, "never", 3, hashlib.sha256(b"xyz").hexdigest()))
    # An erase cut short, and a folder nobody owns.
    db.execute("UPDATE contracts SET state='erasing' WHERE idurl=?", (BOB,))
    db.commit()
    db.close()
    (node.root / "fragments" / folder_name(BOB)).mkdir()
    (node.root / "fragments" / folder_name(BOB) / "b").write_bytes(b"bob")
    (node.root / "fragments" / ("f" * 32)).mkdir()

    role = node.open()
    node.role = role
    assert role.objects(ALICE) == [
        {"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for n, d in ((("kept", b"kept"), ("landed", b"new"), ("renamed", b"renamed")))
    ]
    assert role.used_bytes(ALICE) == 4 + 3 + 7
    assert [c["idurl"] for c in role.customers()] == [ALICE]
    assert sorted(p.name for p in (node.root / "fragments").iterdir()) == [folder_name(ALICE)]
    reply = await node.ask("Retrieve", ALICE, {"name": "renamed"})
    assert Path(reply["payload_path"]).read_bytes() == b"renamed"
    assert reason(await node.ask("Retrieve", ALICE, {"name": "lost"})) == "not_found"
    # Accounting survives a clean restart as well.
    assert node.reopen().used_bytes(ALICE) == 14


async def test_list_files_is_bounded_and_pages(node: Node, monkeypatch: pytest.MonkeyPatch):
    from services.storage import supplier

    monkeypatch.setattr(supplier, "MAX_LISTED", 2)
    ack(await node.hire(ALICE, 1000))
    for name in ("a", "b", "c"):
        ack(await node.put(ALICE, name, b"1"))
    first = ack(await node.ask("ListFiles", ALICE, {}))
    assert [f["name"] for f in first["files"]] == ["a", "b"] and first["truncated"]
    rest = ack(await node.ask("ListFiles", ALICE, {"after": "b"}))
    assert [f["name"] for f in rest["files"]] == ["c"] and not rest["truncated"]


async def test_a_rotated_customer_keeps_its_contract_and_data(tmp_path: Path):
    moved = "http://other.test/alice.xml"
    sources = {moved: [moved, ALICE]}  # alice's identity moved servers: the new one lists the old one

    async def earlier(idurl: str) -> list[str]:
        return [s for s in sources.get(idurl, [idurl]) if s != idurl]

    node = Node(tmp_path)
    node.role.close()
    node.role = SupplierRole(node.root, lambda: node.donated, clock=lambda: 1000.0, earlier_idurls=earlier)
    ack(await node.hire(ALICE, 1000))
    ack(await node.put(ALICE, "F1.0.0", b"alice data"))
    # Bob's identity names nobody: he gets no one's data.
    assert reason(await node.ask("Retrieve", BOB, {"name": "F1.0.0"})) == "not_a_customer"
    # Alice, under her new IDURL, finds her contract and objects; the old IDURL has none left.
    reply = await node.ask("Retrieve", moved, {"name": "F1.0.0"})
    assert Path(reply["payload_path"]).read_bytes() == b"alice data"
    assert node.role.used_bytes(moved) == 10 and node.role.used_bytes(ALICE) == 0
    assert reason(await node.ask("Retrieve", ALICE, {"name": "F1.0.0"})) == "not_a_customer"
    # It survives a restart: the folder kept its name, the contract row says which it is.
    node.role.close()
    node.role = SupplierRole(node.root, lambda: node.donated, clock=lambda: 1000.0, earlier_idurls=earlier)
    reply = await node.ask("Retrieve", moved, {"name": "F1.0.0"})
    assert Path(reply["payload_path"]).read_bytes() == b"alice data"
    ack(await node.put(moved, "F2.0.0", b"more"))
    assert node.role.used_bytes(moved) == 14
    node.role.close()
