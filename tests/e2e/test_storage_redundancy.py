"""A version is ready only when every supplier holds its fragments: end to end, through REST only.

Node 1 is the customer with 4 suppliers (ecc/4x4, k=2). `files_sync` during an upload leaves the
upload alone; an upload with one supplier away is reported degraded (with the missing position),
keeps the older good version, and is repaired to ready once the supplier is back; retention
counts only ready versions.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from deploy import node
from tests.e2e.client import NodeClient
from tests.e2e.storage_helpers import (SUPPLIERS, downloaded_path, hire_suppliers, master_key, node_of,
                                        suppliers_connected, upload)
from tests.helpers import sha256_file, wait_for

KIB, MIB = 1024, 1024 * 1024


def _random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        for start in range(0, size, MIB):
            handle.write(os.urandom(min(MIB, size - start)))
    return path


@contextlib.contextmanager
def _options(client: NodeClient, values: dict[str, Any]) -> Iterator[None]:
    before = {key: client.ok("config_get", key=key)["value"] for key in values}
    for key, value in values.items():
        client.ok("config_set", key=key, value=value)
    try:
        yield
    finally:
        for key, value in before.items():
            client.ok("config_set", key=key, value=value)


@contextlib.contextmanager
def _stopped(client: NodeClient, program: str) -> Iterator[None]:
    """`program` of `client` stopped for the block. A stopped transport makes the supplier unreachable
    (OFFLINE, kept: replace-offline-after is an hour); a stopped storage would answer "no handler",
    a refusal that fires the supplier."""
    supervisor = node.supervisor(client.home)
    supervisor.call_sync("stopProcess", program, True)
    try:
        yield
    finally:
        supervisor.call_sync("startProcess", program, True)
        node.wait_healthy(client.home, 60)


@pytest.fixture(scope="module")
def customer(localnet_nodes, identities) -> NodeClient:
    return hire_suppliers(localnet_nodes.nodes[1])


def _versions(client: NodeClient, remote: str) -> dict[str, dict]:
    return {v["version"]: v for v in client.ok("file_info", remote_path=remote)["versions"]}


def _running(client: NodeClient, remote: str) -> dict | None:
    return next((j for j in client.ok("files_uploads")["running"] if j["remote_path"] == remote), None)


def _finished(client: NodeClient, remote: str, uid: str) -> dict | None:
    version = _versions(client, remote).get(uid)
    return version if version and version["state"] != "uploading" else None


def test_files_sync_during_an_upload_keeps_its_fragments(customer, identities, tmp_path):
    remote = f"{master_key(identities, customer.name)}:redundancy/syncing"
    source = _random_file(tmp_path / "syncing", 24 * MIB)
    # Small blocks one at a time: the upload runs for seconds, files_sync runs inside it.
    with _options(customer, {"services/backups/block-size": 64 * KIB, "services/backups/upload-window": 1}):
        status, doc = customer.call("file_upload_start", local_path=str(source), remote_path=remote)
        assert status == 200, doc
        uid = doc["result"]["version"]
        wait_for(lambda: (_running(customer, remote) or {}).get("block_number", 0) >= 8, timeout=30,
                 interval=0.05, what="the first blocks of the upload stored")
        customer.ok("files_sync")
        assert _running(customer, remote), "the upload ended before files_sync did: nothing was shown"
        version = wait_for(lambda: _finished(customer, remote, uid), timeout=180, interval=0.3,
                           what="the upload finished")
    assert version["state"] == "ready", version
    assert sha256_file(downloaded_path(customer, remote, tmp_path / "out")) == sha256_file(source)
    assert version["reliable"] == "100%" and version["delivered"] == "100%", version
    assert all(s["fragments"] == version["max_block"] + 1 for s in version["suppliers"]), version


def test_a_supplier_away_makes_a_degraded_version_that_is_repaired(net, customer, identities, tmp_path):
    remote = f"{master_key(identities, customer.name)}:redundancy/degraded"
    first = _random_file(tmp_path / "first", 3 * MIB)
    second = _random_file(tmp_path / "second", 40 * MIB)
    with _options(customer, {"services/backups/max-copies": 1}):
        good = upload(customer, first, remote)["version"]
        suppliers = customer.ok("suppliers_list")
        away = node_of(net, suppliers[3]["idurl"])
        with _stopped(away, "transport"):
            result = upload(customer, second, remote)
            # Three of four positions acknowledged: readable, but not "any two of the four".
            assert result["state"] == "degraded", result
            assert result["versions"][0]["missing_positions"] == [3], result
            versions = _versions(customer, remote)
            new = versions[result["version"]]
            assert new["state"] == "degraded" and new["missing_positions"] == [3], new
            # max-copies is 1, yet the older good version stays while the new one is degraded.
            assert versions[good]["state"] == "ready" and versions[good]["reliable"] == "100%", versions
            assert new["reliable"] == "75%" and new["suppliers"][3]["fragments"] == 0, new
            assert all(s["fragments"] == new["max_block"] + 1 for s in new["suppliers"][:3]), new
            assert sha256_file(downloaded_path(customer, remote, tmp_path / "degraded")) == sha256_file(second)
        # The supplier is back: the node sends it the fragments it lacks, the version becomes ready.
        repaired = wait_for(lambda: (v := _versions(customer, remote).get(result["version"])) and
                            v["state"] == "ready" and v, timeout=120, interval=0.5, what="the version repaired")
    assert repaired["reliable"] == "100%" and repaired["missing_positions"] == [], repaired
    assert good not in _versions(customer, remote)  # now the ready version counts against it
    # Any two suppliers bring it back, the repaired position among them.
    stop = [node_of(net, suppliers[i]["idurl"]) for i in (0, 1)]
    with _stopped(stop[0], "transport"), _stopped(stop[1], "transport"):
        assert sha256_file(downloaded_path(customer, remote, tmp_path / "half")) == sha256_file(second)
    wait_for(lambda: suppliers_connected(customer), timeout=90, interval=0.5, what="suppliers CONNECTED again")


def test_retention_counts_only_ready_versions(net, customer, identities, tmp_path):
    remote = f"{master_key(identities, customer.name)}:redundancy/kept"
    first = _random_file(tmp_path / "first", 2 * MIB)
    with _options(customer, {"services/backups/max-copies": 2}):
        good = upload(customer, first, remote)["version"]
        with _options(customer, {"services/backups/block-size": 64 * KIB, "services/backups/upload-window": 1}):
            status, doc = customer.call("file_upload_start", local_path=str(_random_file(tmp_path / "cut", 16 * MIB)),
                                        remote_path=remote)
            assert status == 200, doc
            cut = doc["result"]["version"]
            wait_for(lambda: (_running(customer, remote) or {}).get("block_number", 0) >= 4, timeout=30,
                     interval=0.05, what="the second upload under way")
            customer.ok("file_upload_stop", remote_path=remote)
        assert _versions(customer, remote)[cut]["state"] == "failed"
        last = upload(customer, _random_file(tmp_path / "last", 2 * MIB), remote)["version"]
        versions = _versions(customer, remote)
    # Two copies kept means two good ones: the failed upload does not push the first out.
    assert versions[good]["state"] == "ready" and versions[last]["state"] == "ready", versions
    assert cut not in versions, versions
    holders = [node_of(net, s["idurl"]) for s in customer.ok("suppliers_list")]

    def fragments(uid: str) -> int:
        return sum(len(list((c.home.root / "state" / "storage" / "supplier" / "fragments").rglob(f"*.{uid}.*")))
                   for c in holders)

    wait_for(lambda: fragments(cut) == 0, timeout=60, interval=0.3, what="the failed upload's fragments deleted")
    assert fragments(good) == SUPPLIERS  # one block, one fragment on each supplier


def test_a_replaced_supplier_is_rebuilt_and_the_version_ready_again(net, customer, identities, tmp_path):
    remote = f"{master_key(identities, customer.name)}:redundancy/replaced"
    source = _random_file(tmp_path / "replaced", 20 * MIB)
    uid = upload(customer, source, remote)["version"]
    before = customer.ok("suppliers_list")
    changed = customer.ok("supplier_change", position=2)
    assert changed["idurl"] != before[2]["idurl"]
    wait_for(lambda: suppliers_connected(customer), timeout=90, interval=0.5, what="the new supplier CONNECTED")

    def rebuilt() -> dict | None:
        version = _versions(customer, remote)[uid]
        whole = version["state"] == "ready" and version["suppliers"][2]["fragments"] == version["max_block"] + 1
        return version if whole else None

    version = wait_for(rebuilt, timeout=120, interval=0.5, what="position 2 rebuilt on the new supplier")
    assert version["reliable"] == "100%" and version["missing_positions"] == [], version
    newcomer = node_of(net, changed["idurl"])
    held = list((newcomer.home.root / "state" / "storage" / "supplier" / "fragments").rglob(f"*.{uid}.*.2"))
    assert len(held) == version["max_block"] + 1
    # The two suppliers that were never replaced can be away: the rebuilt position serves its share.
    stop = [node_of(net, before[i]["idurl"]) for i in (0, 1)]
    with _stopped(stop[0], "transport"), _stopped(stop[1], "transport"):
        assert sha256_file(downloaded_path(customer, remote, tmp_path / "half")) == sha256_file(source)
    wait_for(lambda: suppliers_connected(customer), timeout=90, interval=0.5, what="suppliers CONNECTED again")
