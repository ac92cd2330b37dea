"""Storage end to end: a customer with 4 suppliers on the shared local network, through REST only.

Node 1 is the customer (ecc/4x4, k=2). Files go up and come back byte-identical; suppliers are
changed, corrupted, stopped and killed; a share is granted to another node; an identity is
recovered on another node and its catalog and files come back.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from deploy import localnet, node
from tests.e2e.client import NodeClient
from tests.e2e.storage_helpers import (SUPPLIERS, download, hire_suppliers, master_key, node_of,
                                        suppliers_connected, upload)
from tests.helpers import sha256_file, wait_for

MIB = 1024 * 1024


def _pid(client: NodeClient, program: str) -> int:
    return next(p["pid"] for p in client.ok("process_info")["processes"] if p["name"] == program)


def _restart_program(client: NodeClient, program: str) -> None:
    node.supervisor(client.home).call_sync("startProcess", program, True)


def _stop_program(client: NodeClient, program: str) -> None:
    node.supervisor(client.home).call_sync("stopProcess", program, True)


@pytest.fixture(scope="module")
def customer(localnet_nodes, identities) -> NodeClient:
    return hire_suppliers(localnet_nodes.nodes[1])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("storage-files")
    made = {}
    for name, size in (("empty", 0), ("one", 1), ("four_plus", 4 * MIB + 1)):
        path = root / name
        path.write_bytes(os.urandom(size))
        made[name] = path
    folder = root / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"alpha" * 1000)
    (folder / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    made["folder"] = folder
    return made


def test_hire_four_suppliers_and_publish_them(customer, identities):
    items = customer.ok("suppliers_list")
    assert [i["position"] for i in items] == [0, 1, 2, 3]
    idurls = [i["idurl"] for i in items]
    me = identities[customer.name]["idurl"]
    assert me not in idurls and len(set(idurls)) == SUPPLIERS
    assert all(i["contact_state"] == "CONNECTED" and i["global_id"] for i in items)

    def published():
        record = customer.ok("suppliers_list_dht")
        return record if record["suppliers"] == idurls else None

    record = wait_for(published, timeout=30, interval=0.5, what="suppliers record in the DHT")
    assert record["ecc_map"] == "ecc/4x4"
    supplier = _by_idurl_from(customer, idurls[0], identities)
    assert supplier is not None


def _by_idurl_from(customer: NodeClient, idurl: str, identities: dict[str, dict]) -> str | None:
    return next((name for name, doc in identities.items() if doc["idurl"] == idurl), None)


def test_upload_download_identical(customer, identities, files, tmp_path):
    master = master_key(identities, customer.name)
    for name in ("empty", "one", "four_plus"):
        result = upload(customer, files[name], f"{master}:e2e/{name}")
        assert result["state"] == "ready" and result["version"]
        info = customer.ok("file_info", remote_path=f"{master}:e2e/{name}")
        assert info["size"] == files[name].stat().st_size
        assert info["versions"][0]["state"] == "ready"
        got = download(customer, f"{master}:e2e/{name}", tmp_path)
        assert got["downloaded"] is True
        assert sha256_file(Path(got["local_path"])) == sha256_file(files[name]), name
    assert customer.ok("file_exists", remote_path=f"{master}:e2e/one")["exist"] is True
    assert customer.ok("file_exists", remote_path=f"{master}:e2e/nope")["exist"] is False
    listed = {i["path"] for i in customer.ok("files_list", remote_path=f"{master}:e2e")}
    assert {"e2e/empty", "e2e/one", "e2e/four_plus"} <= listed


def test_folder_upload_download(customer, identities, files, tmp_path):
    master = master_key(identities, customer.name)
    upload(customer, files["folder"], f"{master}:tree")
    got = download(customer, f"{master}:tree", tmp_path)
    assert got["downloaded"] is True
    assert (tmp_path / "tree" / "a.txt").read_bytes() == (files["folder"] / "a.txt").read_bytes()
    assert sha256_file(tmp_path / "tree" / "sub" / "b.bin") == sha256_file(files["folder"] / "sub" / "b.bin")


def test_big_file(customer, identities, tmp_path):
    master = master_key(identities, customer.name)
    big = tmp_path / "big"
    with open(big, "wb") as handle:
        for _ in range(100):
            handle.write(os.urandom(MIB))
    upload(customer, big, f"{master}:e2e/big")
    out = tmp_path / "out"
    got = download(customer, f"{master}:e2e/big", out)
    assert sha256_file(Path(got["local_path"])) == sha256_file(big)


def test_bad_inputs(customer, identities, tmp_path):
    master = master_key(identities, customer.name)
    status, doc = customer.call("file_upload_start", local_path=str(tmp_path / "missing"),
                                remote_path=f"{master}:x")
    assert status == 404, doc
    (tmp_path / "f").write_bytes(b"x")
    status, doc = customer.call("file_upload_start", local_path=str(tmp_path / "f"), remote_path="no-key-id")
    assert status == 400 and doc["reason"] == "invalid_remote_path", doc
    status, doc = customer.call("file_download_start", remote_path=f"{master}:does/not/exist",
                                destination_path=str(tmp_path))
    assert status == 404, doc
    status, doc = customer.call("file_info", remote_path=f"{master}:does/not/exist")
    assert status == 404, doc
    status, doc = customer.call("file_upload_start", local_path=str(tmp_path / "f"),
                                remote_path="share_nope$nobody@127.0.0.1_1:x")
    assert status == 404, doc
    status, doc = customer.call("file_upload_start", local_path=str(tmp_path / "f"), remote_path=f"{master}:../x")
    assert status == 400, doc
    (tmp_path / "big").write_bytes(os.urandom(2 * MIB))
    needed = customer.ok("config_get", key="services/customer/needed-space")["value"]
    customer.ok("config_set", key="services/customer/needed-space", value=MIB)
    try:
        status, doc = customer.call("file_upload_start", local_path=str(tmp_path / "big"),
                                    remote_path=f"{master}:quota/big", wait_result=True)
        assert (status, doc.get("reason")) == (409, "over_quota"), doc
    finally:
        customer.ok("config_set", key="services/customer/needed-space", value=needed)
    assert customer.ok("file_exists", remote_path=f"{master}:quota/big")["exist"] is False


def test_corrupt_fragment_is_detected_and_repaired(net, customer, identities, files, tmp_path):
    master = master_key(identities, customer.name)
    items = customer.ok("suppliers_list")
    supplier = node_of(net, items[0]["idurl"])
    uid = customer.ok("file_info", remote_path=f"{master}:e2e/four_plus")["versions"][0]["version"]
    fragments = sorted((supplier.home.root / "state" / "storage" / "supplier" / "fragments").rglob(f"*.{uid}.0.0"))
    assert len(fragments) == 1
    # Corrupt block 0's fragment at position 0 (one of the two primaries a reader prefers).
    originals = {path: path.read_bytes() for path in fragments}
    for path in fragments:
        data = bytearray(originals[path])
        if data:
            data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data) or b"junk")
    got = download(customer, f"{master}:e2e/four_plus", tmp_path)
    assert sha256_file(Path(got["local_path"])) == sha256_file(files["four_plus"])
    wait_for(lambda: any(p.exists() and p.read_bytes() == originals[p] for p in fragments), timeout=30,
             interval=0.2, what="a corrupt fragment repaired")


def test_two_of_four_suppliers_stopped(net, customer, identities, files, tmp_path):
    master = master_key(identities, customer.name)
    items = customer.ok("suppliers_list")
    stopped = [node_of(net, items[i]["idurl"]) for i in (1, 2)]
    for client in stopped:
        _stop_program(client, "storage")
    try:
        for name in ("one", "four_plus"):
            got = download(customer, f"{master}:e2e/{name}", tmp_path / name)
            assert sha256_file(Path(got["local_path"])) == sha256_file(files[name])
    finally:
        for client in stopped:
            _restart_program(client, "storage")
        net.wait_healthy()


def test_supplier_change_rebuilds(net, customer, identities, files, tmp_path):
    master = master_key(identities, customer.name)
    before = customer.ok("suppliers_list")
    result = customer.ok("supplier_change", position=0)
    assert result["idurl"] != before[0]["idurl"]
    wait_for(lambda: suppliers_connected(customer), timeout=60, interval=0.5, what="new supplier CONNECTED")
    new = node_of(net, result["idurl"])

    def rebuilt():
        space = new.ok("space_donated")
        me = identities[customer.name]["idurl"]
        return any(c["idurl"] == me and c["used"] > 4 * MIB for c in space["customers"])

    wait_for(rebuilt, timeout=120, interval=0.5, what="fragments rebuilt on the new supplier")
    # With the suppliers at positions 1 and 2 stopped, block fragments must come from 0 (rebuilt) and 3.
    stopped = [node_of(net, before[i]["idurl"]) for i in (1, 2)]
    for client in stopped:
        _stop_program(client, "storage")
    try:
        got = download(customer, f"{master}:e2e/four_plus", tmp_path)
        assert sha256_file(Path(got["local_path"])) == sha256_file(files["four_plus"])
    finally:
        for client in stopped:
            _restart_program(client, "storage")
        net.wait_healthy()


def test_kill_customer_storage_mid_upload(net, customer, identities, files, tmp_path):
    master = master_key(identities, customer.name)
    big = tmp_path / "killed"
    with open(big, "wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(MIB))
    pid = _pid(customer, "storage")
    status, doc = customer.call("file_upload_start", local_path=str(big), remote_path=f"{master}:e2e/killed")
    assert status == 200, doc
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: node.healthy(customer.home) and _pid(customer, "storage") != pid, timeout=60, interval=0.2,
             what="storage restarted")
    wait_for(lambda: suppliers_connected(customer), timeout=60, interval=0.5, what="suppliers back")
    info = customer.ok("file_info", remote_path=f"{master}:e2e/killed")
    assert all(v["state"] != "ready" or v["size"] == big.stat().st_size for v in info["versions"])
    assert all(v["state"] != "uploading" for v in info["versions"])
    got = download(customer, f"{master}:e2e/four_plus", tmp_path / "after")
    assert sha256_file(Path(got["local_path"])) == sha256_file(files["four_plus"])


def test_kill_supplier_storage_mid_upload(net, customer, identities, tmp_path):
    master = master_key(identities, customer.name)
    big = tmp_path / "during"
    with open(big, "wb") as handle:
        for _ in range(32):
            handle.write(os.urandom(MIB))
    supplier = node_of(net, customer.ok("suppliers_list")[3]["idurl"])
    pid = _pid(supplier, "storage")
    status, doc = customer.call("file_upload_start", local_path=str(big), remote_path=f"{master}:e2e/during")
    assert status == 200, doc
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: node.healthy(supplier.home), timeout=60, interval=0.2, what="supplier storage restarted")

    def finished():
        info = customer.ok("file_info", remote_path=f"{master}:e2e/during")
        return info if info["versions"] and info["versions"][0]["state"] in ("ready", "failed") else None

    info = wait_for(finished, timeout=120, interval=0.5, what="upload finished")
    if info["versions"][0]["state"] == "ready":
        got = download(customer, f"{master}:e2e/during", tmp_path / "out")
        assert sha256_file(Path(got["local_path"])) == sha256_file(big)


def test_share_granted_downloads_elsewhere(net, customer, identities, tmp_path):
    friend = net.nodes[5]
    share = customer.ok("share_create", label="e2e share")
    key_id = share["key_id"]
    assert key_id.startswith("share_") and key_id.endswith("$" + identities[customer.name]["global_id"])
    payload = tmp_path / "shared.bin"
    payload.write_bytes(os.urandom(300_000))
    upload(customer, payload, f"{key_id}:docs/shared.bin")
    granted = customer.ok("share_grant", key_id=key_id, trusted_user_id=identities[friend.name]["global_id"])
    assert granted["suppliers_granted"] >= 2
    assert any(s["key_id"] == key_id for s in friend.ok("shares_list"))
    friend.ok("share_open", key_id=key_id)
    got = download(friend, f"{key_id}:docs/shared.bin", tmp_path / "friend")
    assert sha256_file(Path(got["local_path"])) == sha256_file(payload)


def _reason(client: NodeClient, method: str, **kwargs) -> str:
    status, doc = client.call(method, **kwargs)
    return "" if status == 200 else str(doc.get("reason"))


def test_identity_recover_on_a_fresh_node_restores_catalog_and_files(localnet_nodes, customer, identities, files,
                                                                      tmp_path):
    """Runs last in this module: node-1's identity moves to a new node, then comes back to node-1."""
    master = master_key(identities, customer.name)
    remote = f"{master}:recover/four_plus"
    upload(customer, files["four_plus"], remote)
    listed = {i["path"] for i in customer.ok("files_list", remote_path=f"{master}:recover")}
    backup = tmp_path / "node-1.key"
    customer.ok("identity_backup", destination_filepath=str(backup))
    fresh = NodeClient.from_listing(localnet.add(localnet_nodes.root))
    try:
        assert _reason(fresh, "identity_get") == "identity_not_exist"
        recovered = fresh.ok("identity_recover", private_key_source=str(backup))
        assert recovered["idurl"] == identities[customer.name]["idurl"]
        assert int(recovered["revision"]) > int(identities[customer.name]["revision"])
        # The old holder is told, checks its identity servers and stops using the identity.
        wait_for(lambda: _reason(customer, "identity_get") == "identity_taken_over", timeout=30, interval=0.3,
                 what="node-1 sees its identity taken over")
        # The fresh node finds the suppliers in the DHT and restores the catalog from them.
        wait_for(lambda: fresh.call("file_exists", remote_path=remote)[1].get("result", {}).get("exist"),
                 timeout=90, interval=0.5, what="the catalog restored on the fresh node")
        assert {i["path"] for i in fresh.ok("files_list", remote_path=f"{master}:recover")} == listed
        got = download(fresh, remote, tmp_path / "restored")
        assert sha256_file(Path(got["local_path"])) == sha256_file(files["four_plus"])
        wait_for(lambda: suppliers_connected(fresh), timeout=60, interval=0.5, what="the adopted suppliers CONNECTED")
    finally:
        # node-1 takes its identity back so that the tests after this module find it as it was.
        status, doc = customer.call("identity_recover", private_key_source=str(backup))
        assert status == 200, doc
        wait_for(lambda: _reason(fresh, "identity_get") == "identity_taken_over", timeout=30, interval=0.3,
                 what="the fresh node sees the identity taken back")
        node.stop(fresh.home)
    wait_for(lambda: suppliers_connected(customer), timeout=90, interval=0.5, what="node-1's suppliers CONNECTED again")
    got = download(customer, remote, tmp_path / "back")
    assert sha256_file(Path(got["local_path"])) == sha256_file(files["four_plus"])
