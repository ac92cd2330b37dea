"""Storage trust end to end: what a catalog restore may believe, attacked on real nodes over REST.

Three nodes are added to the shared network for this module (suppliers disabled on them, so no
other test hires them): `alice` and `bob` are customers with two suppliers each among the first
nodes, `fresh` starts without an identity.

- A share's owner (alice) crafts the share's catalog backup so that the document inside names the
  grantee's own master key: the grantee's catalog must stay untouched.
- A supplier keeps an older genuine backup of alice's catalog and serves it back: recovering alice
  on a fresh node must restore the newest one.
- bob's node erases bob and recovers alice: it must show alice's suppliers and files, none of bob's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from common import codec, crypto
from common.fsutil import atomic_write
from deploy import localnet, node
from services.storage.fragment_store import folder_name
from services.storage.fragments import index_name
from tests.e2e.client import NodeClient
from tests.helpers import wait_for

SUPPLIERS = 2


class Party:
    """One added node and the identity it runs."""

    def __init__(self, client: NodeClient):
        self.client = client
        self.idurl = ""
        self.global_id = ""

    @property
    def master(self) -> str:
        return f"master${self.global_id}"


@pytest.fixture(scope="module")
def parties(localnet_nodes, identities) -> Iterator[dict[str, Party]]:
    added: dict[str, Party] = {}
    try:
        for name in ("alice", "bob", "fresh"):
            client = NodeClient.from_listing(localnet.add(localnet_nodes.root))
            client.ok("config_set", key="services/supplier/enabled", value=False)
            added[name] = Party(client)
        # Suppliers among the first nodes only: a customer of the module never stores on another.
        candidates = ",".join(identities[c.name]["global_id"] for c in localnet_nodes.nodes[:4])
        for name in ("alice", "bob"):
            party = added[name]
            # The customer role waits for the network: candidates asked before would all be
            # unreachable, and an unreachable candidate is not asked again for minutes.
            party.client.ok("config_set", key="services/customer/enabled", value=False)
            doc = party.client.ok("identity_create", username=f"trust{name}")
            party.idurl, party.global_id = doc["idurl"], doc["global_id"]
            party.client.ok("config_set", key="services/employer/candidates", value=candidates)
            party.client.ok("config_set", key="services/employer/replace-offline-after", value=3600)
            party.client.ok("config_set", key="services/customer/suppliers-number", value=SUPPLIERS)
        for name in ("alice", "bob"):
            client = added[name].client
            wait_for(lambda: client.call("network_connected", wait_timeout=5)[0] == 200,  # noqa: B023
                     timeout=120, interval=0.5, what=f"{name}'s network connected")
            client.ok("config_set", key="services/customer/enabled", value=True)
        for name in ("alice", "bob"):
            client = added[name].client
            wait_for(lambda: _published(client), timeout=120, interval=0.5,  # noqa: B023 - called right here
                     what=f"{name}'s suppliers hired and published")
        yield added
    finally:
        for party in added.values():
            node.stop(party.client.home)


def _published(client: NodeClient) -> list[str]:
    items = client.ok("suppliers_list")
    idurls = [i["idurl"] for i in items]
    if len(items) != SUPPLIERS or not all(i["supplier_state"] == "CONNECTED" for i in items):
        return []
    status, doc = client.call("suppliers_list_dht")
    return idurls if status == 200 and doc["result"].get("suppliers") == idurls else []


def _node_of(net: Any, idurl: str) -> NodeClient:
    for client in net.nodes:
        if client.ok("identity_get")["idurl"] == idurl:
            return client
    raise AssertionError(f"no node runs {idurl}")


def _index_path(supplier: NodeClient, customer_idurl: str, key_id: str) -> Path:
    return (supplier.home.root / "state" / "storage" / "supplier" / "fragments" / folder_name(customer_idurl)
            / index_name(key_id))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _backed_up_after(paths: list[Path], before: list[bytes | None]) -> list[bytes]:
    """Wait until every supplier holds a backup other than `before`; the new copies."""
    def changed() -> list[bytes]:
        now = [_read(p) for p in paths]
        return [b for b in now if b] if all(b and b != old for b, old in zip(now, before, strict=True)) else []

    return wait_for(changed, timeout=30, interval=0.2, what="the catalog backed up at every supplier")


def _reason(client: NodeClient, method: str, **kwargs: Any) -> str:
    status, doc = client.call(method, **kwargs)
    return "" if status == 200 else str(doc.get("reason"))


def _exists(client: NodeClient, remote_path: str) -> bool:
    status, doc = client.call("file_exists", remote_path=remote_path)
    return status == 200 and bool(doc["result"]["exist"])


def _catalog(client: NodeClient, key_id: str) -> list[tuple[str, list[str]]]:
    return sorted((i["path"], [v["version"] for v in i["versions"]])
                  for i in client.ok("files_list", key_id=key_id))


def test_a_share_owner_cannot_write_into_the_grantees_catalog(net, parties):
    alice, bob = parties["alice"], parties["bob"]
    bob.client.ok("file_create", remote_path=f"{bob.master}:docs/mine.txt")
    share = alice.client.ok("share_create", label="trust share")["key_id"]
    # Nothing is put in the share: the grant's own backup (sent before it answers) is the last one.
    granted = alice.client.ok("share_grant", key_id=share, trusted_user_id=bob.global_id)
    assert granted["suppliers_granted"] == SUPPLIERS
    wait_for(lambda: any(s["key_id"] == share for s in bob.client.ok("shares_list")), timeout=30, interval=0.3,
             what="the share key at bob")
    # alice turns hostile: a genuine envelope for the share (signed by her, sealed for the share
    # key) around a document that names bob's own master key, adding a file and a version of his.
    inner = {"key_id": bob.master, "exported": 0, "items": [
        {"path": "evil.txt", "type": "file", "versions": []},
        {"path": "docs/mine.txt", "type": "file", "versions": [
            {"uid": "F1-0000deadbeef", "created": 4102444800.0, "size": 5, "block_size": 1024,
             "suppliers": SUPPLIERS, "wrapped_key": "x", "blocks": [[0, 5, 33, ["00" * 32] * SUPPLIERS]]}]}]}
    master_pem = alice.client.ok("key_get", key_id=alice.master, include_private=True)["private"]
    share_public = crypto.load_public_key(alice.client.ok("key_get", key_id=share)["public"])
    session = crypto.new_session_key()
    body = codec.dumps({"v": 2, "key_id": share, "exported": 4102444800000,
                        "wrapped": crypto.b64(crypto.wrap_key(share_public, session)),
                        "data": crypto.b64(crypto.aes_encrypt(session, codec.dumps(inner), aad=share.encode()))})
    signature = crypto.sign(crypto.load_private_key(master_pem), hashlib.sha256(body).digest())
    crafted = codec.dumps({"body": body.decode(), "signature": crypto.b64(signature), "signer": alice.idurl})
    # Stored at alice's suppliers where her own backups of the share go (she owns those objects).
    for idurl in [i["idurl"] for i in alice.client.ok("suppliers_list")]:
        atomic_write(_index_path(_node_of(net, idurl), alice.idurl, share), crafted)
    before = _catalog(bob.client, bob.master)
    assert before == [("docs", []), ("docs/mine.txt", [])]
    assert _reason(bob.client, "share_open", key_id=share) == "index_not_found"
    assert _catalog(bob.client, bob.master) == before
    assert not _exists(bob.client, f"{bob.master}:evil.txt")


def test_identity_recover_restores_the_newest_catalog(net, parties, tmp_path):
    alice, fresh = parties["alice"], parties["fresh"]
    suppliers = [i["idurl"] for i in alice.client.ok("suppliers_list")]
    paths = [_index_path(_node_of(net, idurl), alice.idurl, alice.master) for idurl in suppliers]
    before = [_read(p) for p in paths]
    alice.client.ok("file_create", remote_path=f"{alice.master}:trust/old.txt")
    old = _backed_up_after(paths, before)
    alice.client.ok("file_create", remote_path=f"{alice.master}:trust/new.txt")
    _backed_up_after(paths, old)
    # The supplier at position 0 (the first a reader asks) kept the older genuine copy and serves it.
    atomic_write(paths[0], old[0])
    backup = tmp_path / "alice.key"
    alice.client.ok("identity_backup", destination_filepath=str(backup))
    assert _reason(fresh.client, "identity_get") == "identity_not_exist"
    fresh.client.ok("identity_recover", private_key_source=str(backup))
    wait_for(lambda: _exists(fresh.client, f"{alice.master}:trust/old.txt"), timeout=90, interval=0.5,
             what="alice's catalog restored on the fresh node")
    assert _exists(fresh.client, f"{alice.master}:trust/new.txt"), "an older catalog backup was restored"
    wait_for(lambda: _reason(alice.client, "identity_get") == "identity_taken_over", timeout=30, interval=0.3,
             what="alice's first node sees its identity taken over")
    assert [i["idurl"] for i in fresh.client.ok("suppliers_list")] == suppliers


def test_erase_and_recover_on_a_used_home_restores_the_recovered_identity(net, parties, tmp_path):
    alice, bob, fresh = parties["alice"], parties["bob"], parties["fresh"]
    bobs_suppliers = [i["idurl"] for i in bob.client.ok("suppliers_list")]
    alices = bob.client.ok("suppliers_list_dht", customer_id=alice.global_id)["suppliers"]
    assert len(alices) == SUPPLIERS and all(alices)
    assert _exists(bob.client, f"{bob.master}:docs/mine.txt")
    backup = tmp_path / "alice.key"
    fresh.client.ok("identity_backup", destination_filepath=str(backup))
    bob.client.ok("identity_erase")
    assert _reason(bob.client, "identity_get") == "identity_not_exist"
    bob.client.ok("identity_recover", private_key_source=str(backup))
    wait_for(lambda: _exists(bob.client, f"{alice.master}:trust/new.txt"), timeout=90, interval=0.5,
             what="alice's catalog restored on bob's former node")
    assert not [i for i in bob.client.ok("files_list") if i["key_id"] != alice.master], "bob's catalog stayed"
    assert not _exists(bob.client, f"{bob.master}:docs/mine.txt")
    assert [i["idurl"] for i in bob.client.ok("suppliers_list")] == alices, bobs_suppliers


def test_a_storage_process_that_missed_the_erase_ends_the_state_at_start(net, parties):
    """bob's node (now running alice) erases alice and creates carol while its storage is stopped."""
    alice, bob = parties["alice"], parties["bob"]
    assert _exists(bob.client, f"{alice.master}:trust/new.txt")
    supervisor = node.supervisor(bob.client.home)
    supervisor.call_sync("stopProcess", "storage", True)
    try:
        bob.client.ok("identity_erase")
        carol = bob.client.ok("identity_create", username="trustcarol")
    finally:
        supervisor.call_sync("startProcess", "storage", True)
    wait_for(lambda: bob.client.call("files_list")[0] == 200, timeout=60, interval=0.5, what="storage back")

    def alices_state_gone() -> bool:
        listed = bob.client.ok("files_list")
        return not any(i["key_id"] == alice.master for i in listed) and not _exists(
            bob.client, f"{alice.master}:trust/new.txt")

    wait_for(alices_state_gone, timeout=30, interval=0.5, what="alice's catalog gone from carol's node")
    assert carol["global_id"].startswith("trustcarol@")
