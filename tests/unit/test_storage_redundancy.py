"""Which fragments are stored, and what follows from it: degraded versions, repair, retention.

The real catalog, transfers and mover, with suppliers kept in memory behind the mover's wire.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from common import crypto
from common.errors import NodeError
from services.storage.catalog import DEGRADED, FAILED, READY, Block, Catalog
from services.storage.customer import Customer
from services.storage.fragments import Mover
from services.storage.transfers import Job, Transfers

SUPPLIERS = ["http://h:1/s0.xml", "http://h:1/s1.xml", "http://h:1/s2.xml", "http://h:1/s3.xml"]
KEY = "master$alice@h_1"


class MemoryWire:
    """Suppliers in memory: a fragment is acknowledged (with its sha256) once kept; `down` ones fail."""

    def __init__(self, spool: Path):
        self.spool = spool
        self.held: dict[tuple[str, str], bytes] = {}
        self.down: set[str] = set()

    async def send_file(self, idurl: str, name: str, path: Path, sha256: str, timeout: float) -> dict[str, Any]:
        if idurl in self.down:
            raise NodeError("unreachable", reason="unreachable")
        self.held[(idurl, name)] = path.read_bytes()
        return {"command": "Ack", "payload": {"name": name, "sha256": sha256}}

    async def fetch_file(self, idurl: str, name: str, customer_idurl: str | None,
                         timeout: float) -> dict[str, Any]:
        if idurl in self.down:
            raise NodeError("unreachable", reason="unreachable")
        data = self.held.get((idurl, name))
        if data is None:
            return {"command": "Fail", "payload": {"reason": "not_found"}}
        path = self.spool / f"in-{os.urandom(4).hex()}"
        path.write_bytes(data)
        return {"command": "Data", "payload_path": str(path)}

    async def request(self, idurl: str, command: str, payload: Any, timeout: float) -> dict[str, Any]:
        return {"command": "Ack", "payload": {}}

    @property
    def wire(self) -> "MemoryWire":
        return self


async def _progress(_event: str, _data: dict[str, Any]) -> None:
    return None


async def _ready(*_: Any) -> None:
    return None


def _setup(tmp_path: Path) -> tuple[Transfers, MemoryWire]:
    spool = tmp_path / "spool"
    spool.mkdir()
    wire = MemoryWire(spool)
    transfers = Transfers(Catalog(tmp_path / "catalog.sqlite"), Mover(wire, spool), _progress, lambda *_: None,
                          current=lambda: list(SUPPLIERS))
    return transfers, wire


async def _upload(transfers: Transfers, source: Path, block_size: int = 64 * 1024) -> Job:
    item, _ = transfers.catalog.create(KEY, "a.bin", exist_ok=True)
    version = transfers.catalog.add_version(item, block_size, len(SUPPLIERS), "wrapped")
    job = Job("upload", item.remote_path, KEY, version.uid, source.stat().st_size, str(source), block_size,
              len(SUPPLIERS))
    await transfers.upload(job, item, source, crypto.new_session_key(), list(SUPPLIERS), 2, _ready)
    return job


async def test_a_position_that_did_not_acknowledge_makes_the_version_degraded_then_repaired(tmp_path: Path) -> None:
    transfers, wire = _setup(tmp_path)
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(200_000))
    wire.down = {SUPPLIERS[3]}
    job = await _upload(transfers, source)
    catalog = transfers.catalog
    version = catalog.version(job.uid)
    assert version is not None and version.state == DEGRADED and job.state == DEGRADED
    assert job.missing_positions == [3]
    health = catalog.health(version)
    assert (health.blocks, health.weakest, health.per_position) == (4, 3, [4, 4, 4, 0])
    # Still away: nothing to send there, the version stays degraded.
    assert await transfers.repair_version(KEY, version, list(SUPPLIERS), {3}) == (0, 4)
    assert catalog.version(job.uid).state == DEGRADED  # type: ignore[union-attr]
    wire.down = set()
    assert await transfers.repair_version(KEY, version, list(SUPPLIERS), {3}) == (4, 0)
    assert catalog.version(job.uid).state == READY  # type: ignore[union-attr]
    # Any two positions now bring every block back, position 3 among them.
    for block in catalog.blocks(job.uid):
        assert all((SUPPLIERS[p], f) in wire.held for p in range(4)
                   for f in [transfers.fragment_name(KEY, job.uid, block.block_no, p)])


async def test_an_acknowledgement_naming_another_sha256_does_not_count(tmp_path: Path) -> None:
    transfers, wire = _setup(tmp_path)

    async def lying(idurl: str, name: str, path: Path, sha256: str, timeout: float) -> dict[str, Any]:
        return {"command": "Ack", "payload": {"name": name, "sha256": "0" * 64}}

    wire.send_file = lying  # type: ignore[method-assign]
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(1000))
    job = await _upload(transfers, source)
    assert job.state == FAILED and "sha256_mismatch" in job.error


async def test_a_supplier_replaced_mid_upload_counts_for_nothing(tmp_path: Path) -> None:
    transfers, _ = _setup(tmp_path)
    transfers.current = lambda: SUPPLIERS[:2] + ["http://h:1/new.xml", SUPPLIERS[3]]
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(1000))
    job = await _upload(transfers, source)
    assert job.state == DEGRADED and job.missing_positions == [2]


def test_forgetting_a_position_degrades_what_it_held(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    item, _ = catalog.create(KEY, "a.bin")
    version = catalog.add_version(item, 1024, 4, "wrapped")
    for block_no in range(3):
        catalog.put_block(Block(version.uid, block_no, 10, 26, ["h"] * 4, "1111"))
    catalog.finish_version(version.uid, READY, 30, 3)
    assert catalog.settle(version.uid) == READY
    catalog.forget_position(1, 4)
    version = catalog.version(version.uid)  # type: ignore[assignment]
    assert version is not None and version.state == DEGRADED
    assert [b.stored for b in catalog.blocks(version.uid)] == ["1011"] * 3
    health = catalog.health(version)
    assert (health.weakest, health.weak_block, health.missing_positions) == (3, 0, [1])
    catalog.mark_stored(version.uid, 0, [1])
    catalog.mark_stored(version.uid, 1, [1])
    assert catalog.settle(version.uid) == DEGRADED
    assert catalog.health(version).weak_block == 2
    catalog.mark_stored(version.uid, 2, [1])
    assert catalog.settle(version.uid) == READY


async def test_retention_counts_only_ready_versions(tmp_path: Path) -> None:
    options = {"services/customer/suppliers-number": 4, "services/backups/max-copies": 2}

    async def no_event(*_: Any) -> None:
        return None

    customer = Customer(tmp_path / "customer", tmp_path / "spool", MemoryWire(tmp_path), None, options.get,
                        no_event)
    try:
        catalog = customer.catalog
        item, _ = catalog.create(KEY, "a.bin")
        made: list[str] = []
        for state in (READY, FAILED, DEGRADED, READY, DEGRADED):
            version = catalog.add_version(item, 1024, 4, "wrapped", created=1000.0 + len(made))
            catalog.finish_version(version.uid, state, 10, 1)
            made.append(version.uid)
        gone = customer._retain(item)
        # Two ready copies stay; what failed or is degraded before the newest ready one goes;
        # the degraded one after it stays, being repaired.
        assert sorted(gone) == sorted([made[1], made[2]])
        assert [v.uid for v in catalog.versions(item.id)] == [made[4], made[3], made[0]]
    finally:
        customer.close()
        shutil.rmtree(tmp_path / "customer", ignore_errors=True)


async def test_a_catalog_from_before_the_record_counts_nothing_held_until_read_back(tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "catalog.sqlite")
    old.executescript("""
        CREATE TABLE blocks (uid TEXT NOT NULL, block_no INTEGER NOT NULL, plain_size INTEGER NOT NULL,
            cipher_size INTEGER NOT NULL, hashes TEXT NOT NULL, PRIMARY KEY (uid, block_no));
        CREATE TABLE versions (uid TEXT PRIMARY KEY, item_id INTEGER NOT NULL, created REAL NOT NULL,
            state TEXT NOT NULL, size INTEGER NOT NULL DEFAULT 0, block_size INTEGER NOT NULL,
            suppliers INTEGER NOT NULL, wrapped_key TEXT NOT NULL, blocks_total INTEGER NOT NULL DEFAULT 0,
            source_path TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '');
        INSERT INTO versions VALUES ('v1', 1, 1.0, 'ready', 10, 1024, 4, 'w', 1, '', '');
        INSERT INTO blocks VALUES ('v1', 0, 10, 26, '["h0","h1","h2","h3"]');
    """)
    old.close()
    catalog = Catalog(tmp_path / "catalog.sqlite")
    version = catalog.version("v1")
    assert version is not None and version.state == DEGRADED
    assert catalog.blocks("v1")[0].missing() == [0, 1, 2, 3]
    assert catalog.health(version).weakest == 0


async def test_repair_counts_fragments_it_reads_back_and_resends_only_the_rest(tmp_path: Path) -> None:
    transfers, wire = _setup(tmp_path)
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(100_000))
    job = await _upload(transfers, source)
    catalog = transfers.catalog
    catalog.db.execute("UPDATE blocks SET stored='0000' WHERE uid=?", (job.uid,))
    catalog.db.execute("UPDATE versions SET state=? WHERE uid=?", (DEGRADED, job.uid))
    version = catalog.version(job.uid)
    assert version is not None
    sent: list[str] = []
    send = wire.send_file

    async def counting(idurl: str, name: str, path: Path, sha256: str, timeout: float) -> dict[str, Any]:
        sent.append(name)
        return await send(idurl, name, path, sha256, timeout)

    wire.send_file = counting  # type: ignore[method-assign]
    stored, left = await transfers.repair_version(KEY, version, list(SUPPLIERS), {0, 1, 2, 3})
    blocks_count = len(catalog.blocks(job.uid))
    # Two fragments per block read back and verified; the other two sent again.
    assert (stored, left, len(sent)) == (2 * blocks_count, 0, 2 * blocks_count)
    assert catalog.version(job.uid).state == READY  # type: ignore[union-attr]
