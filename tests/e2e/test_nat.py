"""Nodes behind NAT reach and are reached through relays (`service_proxy_server` / `_transport`).

Five hosts, each in its own network namespace: node 0 (identity server, DHT seed), nodes 1 and 2
on the bridge (they relay), nodes 3 and 4 each behind a NAT router of its own that masquerades and
forwards nothing inbound. A NATed node must find out that it cannot be dialled, pick a relay from
the DHT, advertise it, and then be pinged, read from and written to the DHT, store files, keep other
customers' files, and move to the other relay when its relay stops. Needs root, iproute2 and nft.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from deploy import localnet, netns, node
from tests.e2e.client import NodeClient
from tests.e2e.conftest import PORT_OFFSET
from tests.helpers import sha256_file, wait_for

NODES = 5
NATTED = (3, 4)
RELAYS = (1, 2)
OFFSET = PORT_OFFSET + 4000

pytestmark = pytest.mark.skipif(bool(netns.nat_available()), reason=netns.nat_available() or "")


def _idurl(index: int) -> str:
    layout = netns.Layout(localnet.subnet_for(OFFSET), NODES, NATTED)
    return f"http://{layout.address(0)}:{localnet.ID_SERVER_PORT + OFFSET}/node-{index}.xml"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeClient]]:
    root = tmp_path_factory.mktemp("nat")
    try:
        doc = localnet.up(root, NODES, OFFSET, identities=True, timeout=120, namespaces=True, behind_nat=NATTED)
        clients = [NodeClient.from_listing(item) for item in doc["nodes"]]
        for index in NATTED:
            wait_for(lambda i=index: _relayed(clients[i]), timeout=90, interval=0.5,
                     what=f"node-{index} behind NAT relayed")
        yield clients
    finally:
        localnet.down(root)


def _proxy(client: NodeClient) -> dict[str, Any]:
    return dict(client.ok("network_status", proxy=True)["proxy"])


def _relayed(client: NodeClient) -> bool:
    proxy = _proxy(client)
    contacts = client.ok("identity_get")["contacts"]
    return proxy["state"] == "CONNECTED" and contacts == [proxy["contact"]]


def _gid(client: NodeClient) -> str:
    return str(client.ok("identity_get")["global_id"])


def _pings(a: NodeClient, b: NodeClient) -> bool:
    status, doc = a.call("user_ping", user_id=_gid(b), timeout=10)
    return status == 200 and doc["result"]["command"] == "Ack"


def _relayed_packets(clients: list[NodeClient]) -> int:
    return sum(int(_proxy(clients[i])["server"]["relayed_packets"]) for i in RELAYS)


def _dial(namespace: str, host: str, port: int) -> str:
    """Try a TCP connection from inside `namespace`: "connected", or why not."""
    def attempt() -> str:
        try:
            with socket.create_connection((host, port), timeout=3):
                return "connected"
        except OSError as err:
            return type(err).__name__
    return netns.in_namespace(namespace, attempt)


def test_natted_nodes_find_they_need_a_relay_and_advertise_it(hosts):
    layout = netns.Layout(localnet.subnet_for(OFFSET), NODES, NATTED)
    for index in NATTED:
        proxy = _proxy(hosts[index])
        assert proxy["behind_nat"] is True
        assert proxy["router"] in (_idurl(1), _idurl(2))
        relay = hosts[1 if proxy["router"] == _idurl(1) else 2]
        assert _idurl(index) in _proxy(relay)["server"]["routes"]
        # Really unreachable: its router's address answers no connection (nothing is forwarded in).
        tcp_port = localnet.node_ports(index, OFFSET)["services/tcp-connections/tcp-port"]
        assert _dial(layout.namespace(0), layout.public_address(index), tcp_port) != "connected"
    for index in (0, *RELAYS):
        proxy = _proxy(hosts[index])
        assert proxy["behind_nat"] is not True and proxy["contact"] == ""
        assert hosts[index].ok("identity_get")["contacts"][0].startswith("tcp://")
    services = {s["name"]: s["state"] for s in hosts[3].ok("services_list")}
    assert services["service_proxy_transport"] == "ON" and services["service_proxy_server"] == "OFF"


def test_every_pair_pings_through_relays(hosts):
    before = _relayed_packets(hosts)
    for a, b in itertools.permutations(hosts, 2):
        wait_for(lambda a=a, b=b: _pings(a, b), timeout=60, interval=0.5, what=f"{a.name} pings {b.name}")
    # The NATed nodes can only reach each other through a relay.
    assert _relayed_packets(hosts) > before


def _read(client: NodeClient, key: str) -> dict | None:
    status, doc = client.call("dht_value_get", key=key)
    result = doc.get("result") if status == 200 else None
    return result if isinstance(result, dict) and result.get("read") == "success" else None


def test_dht_reads_to_and_from_a_natted_node(hosts):
    hosts[3].ok("dht_value_set", key="from-behind-nat", value={"n": 3})
    assert wait_for(lambda: _read(hosts[1], "from-behind-nat"), timeout=30, interval=0.5,
                    what="node-3's value read on node-1")["value"]["n"] == 3
    hosts[2].ok("dht_value_set", key="to-behind-nat", value={"n": 2})
    assert wait_for(lambda: _read(hosts[4], "to-behind-nat"), timeout=30, interval=0.5,
                    what="node-2's value read behind NAT")["value"]["n"] == 2


def _store_and_fetch(customer: NodeClient, tmp_path: Path, name: str, size: int) -> None:
    source = tmp_path / name
    source.write_bytes(os.urandom(size))
    remote = f"master${_gid(customer)}:{name}"
    customer.ok("file_upload_start", local_path=str(source), remote_path=remote, wait_result=True)
    got = customer.ok("file_download_start", remote_path=remote, destination_path=str(tmp_path / f"{name}.back"),
                      wait_result=True)
    assert sha256_file(Path(got["local_path"])) == sha256_file(source)


def _suppliers(customer: NodeClient) -> list[str] | None:
    items = customer.ok("suppliers_list")
    ready = len(items) == 2 and all(i["supplier_state"] == "CONNECTED" for i in items)
    return sorted(i["idurl"] for i in items) if ready else None


def _relayed_bytes(clients: list[NodeClient]) -> int:
    return sum(int(_proxy(clients[i])["server"]["relayed_bytes"]) for i in RELAYS)


def _hire(customer: NodeClient, wanted: list[NodeClient]) -> None:
    """Make `wanted` among the customer's suppliers, each in a position held by an unwanted one;
    ask again while one is missing."""
    wait_for(lambda: _suppliers(customer), timeout=90, interval=0.5, what=f"{customer.name}'s suppliers")
    idurls = {_idurl(int(c.name.rsplit("-", 1)[1])): c for c in wanted}
    asked: dict[str, float] = {}

    def hired() -> bool:
        items = sorted(customer.ok("suppliers_list"), key=lambda item: item["position"])
        held = [item["idurl"] for item in items]
        free = [item["position"] for item in items if item["idurl"] not in idurls]
        missing = [idurl for idurl in idurls if idurl not in held]
        for idurl, position in zip(missing, free, strict=False):  # as many as there are free positions
            if time.monotonic() - asked.get(idurl, float("-inf")) > 15:
                customer.ok("supplier_change", position=position, new_supplier_id=_gid(idurls[idurl]))
                asked[idurl] = time.monotonic()
        return not missing and bool(_suppliers(customer))

    wait_for(hired, timeout=120, interval=0.5, what=f"{customer.name} hired {', '.join(c.name for c in wanted)}")


def test_storage_between_natted_nodes_crosses_relays(hosts, tmp_path):
    # NATed customer, NATed supplier: neither can dial the other, so every fragment is relayed.
    _hire(hosts[3], [hosts[4]])
    before = _relayed_bytes(hosts)
    _store_and_fetch(hosts[3], tmp_path, "natted-to-natted.bin", 3 * 1024 * 1024)
    assert _relayed_bytes(hosts) - before > 1024 * 1024


def test_storage_with_natted_suppliers(hosts, tmp_path):
    # A public customer whose suppliers are both behind NAT (they dial it back; the relay introduces them).
    _hire(hosts[1], [hosts[3], hosts[4]])
    _store_and_fetch(hosts[1], tmp_path, "natted-suppliers.bin", 3 * 1024 * 1024)


def test_failover_to_another_relay_when_the_relay_stops(hosts):
    natted = hosts[3]
    old = _proxy(natted)["router"]
    old_index = 1 if old == _idurl(1) else 2
    survivor = hosts[3 - old_index]
    node.stop(hosts[old_index].home)
    try:
        wait_for(lambda: _proxy(natted)["router"] == _idurl(3 - old_index) and _relayed(natted), timeout=60,
                 interval=0.5, what="node-3 relayed by the other relay")
        before = int(_proxy(survivor)["server"]["relayed_packets"])
        # node-4 (NATed too) can only reach node-3 through its new relay, after refetching its identity.
        wait_for(lambda: _pings(hosts[4], natted), timeout=60, interval=0.5, what="node-4 pings node-3 again")
        assert int(_proxy(survivor)["server"]["relayed_packets"]) > before
    finally:
        node.start(hosts[old_index].home, wait=True, timeout=120)
