"""Identity rotation does not strand peers: a node that knew the old IDURL still reaches the node.

A fresh node is added to the shared network with an identity on node-0's identity server and its
own identity server as the preferred one to move to. After `identity_rotate`, a peer that pinged
it before pings the old global id and the new one; both answer within seconds.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from deploy import localnet, node
from tests.e2e.client import NodeClient
from tests.helpers import sha256_file, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pings(client: NodeClient, user_id: str) -> dict | None:
    status, doc = client.call("user_ping", user_id=user_id, timeout=5)
    return doc["result"] if status == 200 and doc["result"].get("command") == "Ack" else None


def test_rotation_keeps_peers_in_touch(localnet_nodes, identities):
    peer = localnet_nodes.nodes[2]
    moving = NodeClient.from_listing(localnet.add(localnet_nodes.root))
    try:
        port = _free_port()
        moving.ok("config_set", key="services/identity-server/enabled", value=True)
        moving.ok("config_set", key="services/identity-server/web-port", value=port)
        moving.ok("config_set", key="services/identity-propagate/preferred-servers", value=f"127.0.0.1:{port}")
        home_server = identities["node-0"]["idurl"].split("/")[2]
        before = moving.ok("identity_create", username="mover", preferred_servers=home_server)
        assert before["idurl"] == f"http://{home_server}/mover.xml"
        # The new node joins the network once its identity exists.
        wait_for(lambda: _pings(peer, before["global_id"]), timeout=30, interval=0.5, what="the new node answers")

        rotated = moving.ok("identity_rotate")
        assert rotated["old_idurl"] == before["idurl"]
        assert rotated["idurl"] == f"http://127.0.0.1:{port}/mover.xml"
        assert before["idurl"] in rotated["sources"], rotated

        old_answer = wait_for(lambda: _pings(peer, before["global_id"]), timeout=20, interval=0.5,
                              what="a ping of the old global id answered")
        assert old_answer["idurl"] in (before["idurl"], rotated["idurl"])
        new_answer = wait_for(lambda: _pings(peer, rotated["global_id"]), timeout=20, interval=0.5,
                              what="a ping of the new global id answered")
        assert new_answer["idurl"] == rotated["idurl"]
        # Clients that follow the event log see the rotation there too.
        log = moving.home.logs / "event.log"
        wait_for(lambda: "  local-identity-rotated  " in log.read_text(), timeout=10, what="the event in event.log")
        # The peer that was told follows the rotation: its cache holds the new revision only.
        cached = {i["idurl"]: i for i in peer.ok("identity_cache_list")}
        assert rotated["idurl"] in cached and before["idurl"] not in cached
    finally:
        node.stop(moving.home)


def _connected_suppliers(client: NodeClient, count: int = 2) -> list[str]:
    items = client.ok("suppliers_list")
    live = [i["idurl"] for i in items if i["supplier_state"] == "CONNECTED"]
    return live if len(items) == count and len(live) == count else []


def test_rotated_customer_and_supplier_keep_their_storage(localnet_nodes, identities, tmp_path):
    """A customer rotates: same suppliers, its files under its new key id. A supplier rotates: its
    customer still downloads from it."""
    home_server = identities["node-0"]["idurl"].split("/")[2]
    mover = NodeClient.from_listing(localnet.add(localnet_nodes.root))
    client = NodeClient.from_listing(localnet.add(localnet_nodes.root))
    try:
        port = _free_port()
        mover.ok("config_set", key="services/identity-server/enabled", value=True)
        mover.ok("config_set", key="services/identity-server/web-port", value=port)
        mover.ok("config_set", key="services/identity-propagate/preferred-servers", value=f"127.0.0.1:{port}")
        before = mover.ok("identity_create", username="storemover", preferred_servers=home_server)
        client.ok("identity_create", username="storeclient", preferred_servers=home_server)
        hired = wait_for(lambda: _connected_suppliers(mover), timeout=90, interval=0.5, what="mover's suppliers")
        wait_for(lambda: _connected_suppliers(client), timeout=90, interval=0.5, what="client's suppliers")
        client.ok("supplier_change", position=0, new_supplier_id=before["global_id"])
        wait_for(lambda: before["idurl"] in _connected_suppliers(client), timeout=60, interval=0.5,
                 what="the mover serving the client")
        mine, theirs = tmp_path / "mine.bin", tmp_path / "theirs.bin"
        mine.write_bytes(os.urandom(300_000))
        theirs.write_bytes(os.urandom(300_000))
        mover.ok("file_upload_start", local_path=str(mine), remote_path=f"master${before['global_id']}:mine.bin",
                 wait_result=True)
        client_key = f"master${client.ok('identity_get')['global_id']}"
        client.ok("file_upload_start", local_path=str(theirs), remote_path=f"{client_key}:theirs.bin",
                  wait_result=True)

        rotated = mover.ok("identity_rotate")
        new_key = f"master${rotated['global_id']}"
        # The customer: the same suppliers keep its data, now under its new IDURL and key id.
        wait_for(lambda: mover.call("file_exists", remote_path=f"{new_key}:mine.bin")[1]["result"]["exist"],
                 timeout=20, interval=0.5, what="the catalog renamed")
        wait_for(lambda: sorted(_connected_suppliers(mover)) == sorted(hired), timeout=60, interval=0.5,
                 what="the same suppliers CONNECTED after the rotation")
        got = mover.ok("file_download_start", remote_path=f"{new_key}:mine.bin",
                       destination_path=str(tmp_path / "back"), wait_result=True)
        assert sha256_file(Path(got["local_path"])) == sha256_file(mine)
        # The supplier: its customer still reads the fragments it holds (position 0 is a primary).
        got = client.ok("file_download_start", remote_path=f"{client_key}:theirs.bin",
                        destination_path=str(tmp_path / "client"), wait_result=True)
        assert sha256_file(Path(got["local_path"])) == sha256_file(theirs)
        assert len(_connected_suppliers(client)) == 2
    finally:
        node.stop(mover.home)
        node.stop(client.home)
