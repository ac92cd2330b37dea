"""A stranger cannot become another user by listing that user's IDURL among its sources (issue 19).

A victim node joins the shared network with its identity on an identity server of its own. A
stranger (made here with the project's own modules, its own key) publishes a document on the
network's real identity server (node 0) under the victim's name, whose sources also list the
victim's IDURL, and gets a target node that has not met the victim to fetch it (a ping). The
target must still know the victim by the victim's own key: it reaches the victim, accepts the
victim's packets, and counts the claim it ignored.
"""

from __future__ import annotations

import secrets
import socket
import urllib.error
import urllib.request

from common import crypto
from deploy import localnet, node
from services.identity import document
from tests.e2e.client import NodeClient
from tests.helpers import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _upload(server: str, xml: str) -> tuple[int, str]:
    req = urllib.request.Request(f"http://{server}/upload", data=xml.encode(), method="POST",
                                 headers={"Content-Type": "application/xml"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _pings(client: NodeClient, user_id: str) -> dict | None:
    status, doc = client.call("user_ping", user_id=user_id, timeout=5)
    return doc["result"] if status == 200 and doc["result"].get("command") == "Ack" else None


def test_a_stranger_listing_the_victims_idurl_does_not_become_the_victim(localnet_nodes, identities):
    target = localnet_nodes.nodes[1]
    network_server = identities["node-0"]["idurl"].split("/")[2]
    victim = NodeClient.from_listing(localnet.add(localnet_nodes.root))
    try:
        own_server = f"127.0.0.1:{_free_port()}"
        victim.ok("config_set", key="services/identity-server/enabled", value=True)
        victim.ok("config_set", key="services/identity-server/web-port", value=int(own_server.split(":")[1]))
        name = "vic" + secrets.token_hex(4)
        victim_idurl = f"http://{own_server}/{name}.xml"

        # The stranger: its own key, the same name on the network's identity server, and the
        # victim's IDURL as an "earlier source".
        stranger_key = crypto.generate_private_key(2048)
        stranger_idurl = f"http://{network_server}/{name}.xml"
        forged = document.new_document([stranger_idurl, victim_idurl], ["tcp://127.0.0.1:9"], stranger_key)
        status, body = _upload(network_server, forged.to_xml())
        assert status == 200, body

        # The target meets the stranger before it has met the victim (a ping makes it fetch the
        # stranger's identity); the victim's node joins the network just after.
        target.call("user_ping", user_id=stranger_idurl, timeout=3)

        def stranger_cached() -> dict | None:
            return next((i for i in target.ok("identity_cache_list") if i["idurl"] == stranger_idurl), None)

        cached = wait_for(stranger_cached, timeout=20, interval=0.5, what="the stranger's identity fetched")
        assert cached["publickey"] == forged.publickey
        real = victim.ok("identity_create", username=name, preferred_servers=own_server)
        assert real["idurl"] == victim_idurl

        # The target knows the victim's IDURL by the victim's key only.
        for entry in target.ok("identity_cache_list"):
            if real["idurl"] in entry["sources"]:
                assert entry["publickey"] == real["publickey"], "the stranger's key is taken as the victim's"
        # It reaches the victim, and accepts the victim's packets.
        wait_for(lambda: _pings(target, real["global_id"]), timeout=30, interval=0.5,
                 what="the target reaches the victim")
        wait_for(lambda: _pings(victim, identities[target.name]["global_id"]), timeout=30, interval=0.5,
                 what="the target answers the victim")
        entry = next(i for i in target.ok("identity_cache_list") if i["idurl"] == real["idurl"])
        assert entry["publickey"] == real["publickey"]
        # The ignored claim was counted.
        stats = target.ok("network_status", cache=True)["cache"]["identity"]
        assert stats["unconfirmed_sources"] >= 1, stats
    finally:
        node.stop(victim.home)
