"""Nodes on separate hosts: each in its own network namespace with its own address on a bridge.

The flows that work on loopback must work here too, and again under WAN conditions (50 ms delay
and 1% loss on every link: `tc netem`, or the user-space emulator `deploy/wan.py` on a kernel
without it): identities from the identity server at node 0's address, DHT values and nicknames,
pings between all pairs, a key shared, storage and a private message.
Needs root and iproute2; skipped with the reason elsewhere.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterator

import pytest

from deploy import localnet, netns
from tests.e2e.client import NodeClient
from tests.e2e.conftest import PORT_OFFSET
from tests.helpers import sha256_file, wait_for

NODES = 4
OFFSET = PORT_OFFSET + 3000

pytestmark = pytest.mark.skipif(bool(netns.available()), reason=netns.available() or "")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeClient]]:
    root = tmp_path_factory.mktemp("netns")
    try:
        doc = localnet.up(root, NODES, OFFSET, identities=True, timeout=120, namespaces=True)
        yield [NodeClient.from_listing(item) for item in doc["nodes"]]
    finally:
        localnet.down(root)
        assert not any(name.startswith(f"bd{localnet.subnet_for(OFFSET)}n") for name in _namespaces())


def _namespaces() -> list[str]:
    return [line.split()[0] for line in os.popen("ip netns list").read().splitlines() if line.strip()]


def _gid(client: NodeClient) -> str:
    return str(client.ok("identity_get")["global_id"])


def _pings(a: NodeClient, b: NodeClient) -> bool:
    status, doc = a.call("user_ping", user_id=_gid(b), timeout=10)
    return status == 200 and doc["result"]["command"] == "Ack"


def _read(client: NodeClient, key: str) -> dict | None:
    status, doc = client.call("dht_value_get", key=key)
    result = doc.get("result") if status == 200 else None
    return result if isinstance(result, dict) and result.get("read") == "success" else None


def _every_pair_pings(hosts: list[NodeClient]) -> None:
    for a, b in itertools.permutations(hosts, 2):
        wait_for(lambda a=a, b=b: _pings(a, b), timeout=60, interval=0.5, what=f"{a.name} pings {b.name}")


def test_nodes_are_separate_hosts(hosts):
    for client in hosts:
        me = client.ok("identity_get")
        assert me["contacts"] == [f"tcp://{client.address}:{me['contacts'][0].rsplit(':', 1)[1]}"]
        assert me["idurl"].startswith(f"http://{hosts[0].address}:")
    _every_pair_pings(hosts)


def test_dht_values_and_nicknames_across_hosts(hosts):
    hosts[1].ok("dht_value_set", key="netns-key", value={"from": "node-1"})
    found = wait_for(lambda: _read(hosts[3], "netns-key"), timeout=30, interval=0.5,
                     what="a DHT value written on node-1 read on node-3")
    assert found["value"]["from"] == "node-1"
    result = wait_for(lambda: (r := hosts[2].ok("user_search", nickname="node-3"))["result"] == "exist" and r,
                      timeout=30, interval=0.5, what="node-3's nickname found from node-2")
    assert result["global_id"] == _gid(hosts[3])


def test_a_key_shared_across_hosts(hosts):
    owner, friend = hosts[1], hosts[2]
    key = owner.ok("key_create", key_alias="netnskey", key_size=1024)
    owner.ok("key_share", key_id=key["key_id"], trusted_user_id=_gid(friend), timeout=30)
    assert any(k["key_id"] == key["key_id"] for k in friend.ok("keys_list"))


def _store_and_fetch(customer: NodeClient, tmp_path: Path, name: str, size: int) -> None:
    source = tmp_path / name
    source.write_bytes(os.urandom(size))
    remote = f"master${_gid(customer)}:{name}"
    customer.ok("file_upload_start", local_path=str(source), remote_path=remote, wait_result=True)
    got = customer.ok("file_download_start", remote_path=remote, destination_path=str(tmp_path / "back"),
                      wait_result=True)
    assert sha256_file(Path(got["local_path"])) == sha256_file(source)


def _suppliers_ready(customer: NodeClient) -> bool:
    items = customer.ok("suppliers_list")
    return len(items) == 2 and all(i["supplier_state"] == "CONNECTED" for i in items)


def test_storage_and_a_message_across_hosts(hosts, tmp_path):
    customer = hosts[1]
    wait_for(lambda: _suppliers_ready(customer), timeout=90, interval=0.5, what="2 suppliers on other hosts")
    _store_and_fetch(customer, tmp_path, "one.bin", 3 * 1024 * 1024)
    sent = hosts[2].ok("message_send", recipient_id=_gid(hosts[3]), data={"hello": "across hosts"})
    assert sent["delivered"] is True or sent["state"] in ("delivered", "pending")
    wait_for(lambda: any(m["doc"]["payload"]["data"] == {"hello": "across hosts"}
                         for m in hosts[3].ok("message_history", sender_id=_gid(hosts[2]))),
             timeout=30, interval=0.5, what="the message in node-3's history")


def _round_trip(a: NodeClient, b: NodeClient) -> float | None:
    status, doc = a.call("user_ping", user_id=_gid(b), timeout=10)
    return float(doc["result"]["round_trip"]) if status == 200 else None


def test_under_wan_conditions(hosts, tmp_path):
    # tc netem where the kernel has it, else the user-space emulator (deploy/wan.py); see wan_method().
    made = netns.Layout(localnet.subnet_for(OFFSET), NODES)
    netns.netem(made, 50, 1)
    _every_pair_pings(hosts)
    # The delay is real: a ping (request and reply, 50 ms each way) takes at least 100 ms now.
    rtts = [wait_for(lambda: _round_trip(hosts[1], hosts[2]), timeout=30, interval=0.5, what="a ping under WAN")
            for _ in range(3)]
    assert min(rtts) >= 0.1, (netns.wan_method(), rtts)
    _store_and_fetch(hosts[1], tmp_path, "wan.bin", 1024 * 1024)
    hosts[3].ok("message_send", recipient_id=_gid(hosts[1]), data={"over": "the WAN"})
    wait_for(lambda: any(m["doc"]["payload"]["data"] == {"over": "the WAN"}
                         for m in hosts[1].ok("message_history", sender_id=_gid(hosts[3]))),
             timeout=60, interval=0.5, what="a message across the WAN")
    hosts[0].ok("dht_value_set", key="netns-wan", value={"n": 2})
    assert wait_for(lambda: _read(hosts[2], "netns-wan"), timeout=60, interval=1,
                    what="a DHT value across the WAN")["value"]["n"] == 2
