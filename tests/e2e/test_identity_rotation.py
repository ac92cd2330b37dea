"""Identity rotation does not strand peers: a node that knew the old IDURL still reaches the node.

A fresh node is added to the shared network with an identity on node-0's identity server and its
own identity server as the preferred one to move to. After `identity_rotate`, a peer that pinged
it before pings the old global id and the new one; both answer within seconds.
"""

from __future__ import annotations

import socket

from deploy import localnet, node
from tests.e2e.client import NodeClient
from tests.helpers import wait_for


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
