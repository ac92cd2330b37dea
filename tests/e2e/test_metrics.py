"""`GET /metrics` of real nodes, parsed with prometheus_client's own parser.

Names, types and label sets are checked against `common.metrics.CATALOG`; counters must move
after an upload, a ping and a message; a program that is down shows `up 0` and the scrape still
answers; the secret is required (header, or `Authorization: Bearer` as Prometheus sends it).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import subjects
from common.metrics import CATALOG, COUNTER
from deploy import localnet, node
from tests.e2e.client import NodeClient
from tests.helpers import wait_for

MIB = 1024 * 1024


def scrape_raw(client: NodeClient, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(client.base + "/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def scrape(client: NodeClient) -> dict[str, Any]:
    status, _, text = scrape_raw(client, {"Authorization": f"Bearer {client.secret}"})
    assert status == 200, text
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
    base = name[:-len("_total")] if name.endswith("_total") else name
    family = families.get(base)
    if family is None:
        return 0.0
    return sum(s.value for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def customer(localnet_nodes, identities) -> NodeClient:
    client = localnet_nodes.nodes[0]
    wanted = int(client.ok("config_get", key="services/customer/suppliers-number")["value"])
    wait_for(lambda: len([i for i in client.ok("suppliers_list") if i["supplier_state"] == "CONNECTED"]) == wanted,
             timeout=120, interval=0.5, what=f"{wanted} suppliers CONNECTED")
    return client


def test_the_secret_is_required(net):
    client = net.nodes[0]
    status, _, body = scrape_raw(client)
    assert status == 401 and "bitdust_" not in body
    assert scrape_raw(client, {"Authorization": "Bearer wrong"})[0] == 403
    assert scrape_raw(client, {"Authorization": f"Basic {client.secret}"})[0] == 401
    status, content_type, body = scrape_raw(client, {"api_secret": client.secret})
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4") and "bitdust_program_up" in body


def test_names_types_and_labels_follow_the_list(customer):
    families = scrape(customer)
    assert all(name.startswith("bitdust_") for name in families)
    for spec in CATALOG:
        base = spec.name[:-len("_total")] if spec.kind == COUNTER else spec.name
        assert base in families, spec.name
        family = families[base]
        assert family.type == spec.kind, spec.name
        for sample in family.samples:
            assert set(sample.labels) == set(spec.labels), (spec.name, sample.labels)
            assert not any(v.startswith("http") or "@" in v for v in sample.labels.values()), sample
    extra = set(families) - {s.name[:-len("_total")] if s.kind == COUNTER else s.name for s in CATALOG}
    assert not extra, extra
    for program in ("bus", *subjects.PROCESSES):
        assert value(families, "bitdust_program_up", program=program) == 1, program
    for program in subjects.PROCESSES:
        assert value(families, "bitdust_program_resident_memory_bytes", program=program) > 10 * MIB
        assert value(families, "bitdust_program_cpu_seconds_total", program=program) > 0
        assert value(families, "bitdust_bus_messages_total", program=program, direction="in") > 0
    wanted = customer.ok("config_get", key="services/customer/suppliers-number")["value"]
    assert value(families, "bitdust_suppliers", state="CONNECTED") == value(families, "bitdust_suppliers_wanted") \
        == wanted
    assert value(families, "bitdust_service_state", service="service_customer", state="ON") == 1
    assert value(families, "bitdust_space_donated_bytes") > 0


def test_counters_move_after_an_upload_a_ping_and_a_message(net, customer, identities, tmp_path):
    peer = next(c for c in net.nodes if c is not customer)
    before, peer_before = scrape(customer), scrape(peer)
    sample = tmp_path / "counted.bin"
    sample.write_bytes(os.urandom(5 * MIB))
    master = f"master${identities[customer.name]['global_id']}"
    customer.ok("file_upload_start", local_path=str(sample), remote_path=f"{master}:metrics/counted.bin",
                wait_result=True)
    customer.ok("user_ping", user_id=identities[peer.name]["global_id"])
    customer.ok("message_send", recipient_id=identities[peer.name]["global_id"], data={"message": "counted"})
    # The recipient counts the message when it arrives; the send returns on its Ack, so this is quick.
    wait_for(lambda: value(scrape(peer), "bitdust_messages_received_total", kind="private", result="accepted")
             > value(peer_before, "bitdust_messages_received_total", kind="private", result="accepted"),
             timeout=30, interval=0.2, what="the message counted on the recipient")
    after, peer_after = scrape(customer), scrape(peer)

    def moved(name: str, families=(before, after), **labels: str) -> float:
        return value(families[1], name, **labels) - value(families[0], name, **labels)

    assert moved("bitdust_transfer_bytes_total", kind="upload") == 5 * MIB
    assert moved("bitdust_transfers_finished_total", kind="upload", result="ready") == 1
    assert moved("bitdust_transport_packets_total", direction="out", command="Data") >= 2
    assert moved("bitdust_transport_bytes_total", direction="out") > 5 * MIB
    assert moved("bitdust_transport_packets_total", direction="in", command="Ack") >= 3  # fragments, ping, message
    for method in ("file_upload_start", "user_ping", "message_send"):
        assert moved("bitdust_api_requests_total", method=method, status="200") == 1, method
    assert moved("bitdust_bus_messages_total", program="storage", direction="out") > 0
    assert moved("bitdust_program_cpu_seconds_total", program="storage") > 0
    assert moved("bitdust_messages", direction="out", state="delivered") == 1
    assert moved("bitdust_messages_received_total", (peer_before, peer_after), kind="private", result="accepted") == 1
    assert moved("bitdust_transport_packets_total", (peer_before, peer_after), direction="in", command="Message") == 1


def test_a_program_that_is_down_shows_up_0_and_the_scrape_answers(net):
    client = net.nodes[-1]
    supervisor = node.supervisor(client.home)
    supervisor.call_sync("stopProcess", "messaging", True)
    try:
        began = time.monotonic()
        families = scrape(client)
        took = time.monotonic() - began
        assert value(families, "bitdust_program_up", program="messaging") == 0
        assert value(families, "bitdust_program_resident_memory_bytes", program="messaging") == 0
        for program in ("bus", *[p for p in subjects.PROCESSES if p != "messaging"]):
            assert value(families, "bitdust_program_up", program=program) == 1, program
        assert took < 5, took
    finally:
        supervisor.call_sync("startProcess", "messaging", True)
    wait_for(lambda: node.healthy(client.home), timeout=60, interval=0.2, what="messaging back")
    assert value(scrape(client), "bitdust_program_up", program="messaging") == 1


def test_a_program_that_hangs_costs_the_scrape_its_timeout_only(net):
    import signal

    from services.api.metrics import SCRAPE_TIMEOUT

    client = net.nodes[-1]
    pid = next(p["pid"] for p in client.ok("process_info")["processes"] if p["name"] == "dht")
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        families = scrape(client)
        took = time.monotonic() - began
    finally:
        os.kill(pid, signal.SIGCONT)
    assert value(families, "bitdust_program_up", program="dht") == 0
    assert value(families, "bitdust_program_up", program="transport") == 1
    assert SCRAPE_TIMEOUT <= took < SCRAPE_TIMEOUT + 2, took


def test_websocket_calls_are_counted_by_method_and_status(net):
    import asyncio

    import aiohttp

    client = net.nodes[0]
    before = scrape(client)

    async def calls() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(client.ws_url + f"?api_secret={client.secret}") as sock:
                for call_id, method in enumerate(("process_health", "file_info")):
                    await sock.send_json({"command": "api_call", "method": method, "call_id": call_id,
                                          "kwargs": {"remote_path": "master$nobody@nowhere_1:none"}
                                          if method == "file_info" else {}})
                    while (await sock.receive_json(timeout=30)).get("type") != "api_call":
                        pass

    asyncio.run(calls())
    after = scrape(client)
    for method, status in (("process_health", "200"), ("file_info", "404")):
        assert value(after, "bitdust_api_requests_total", method=method, status=status) \
            - value(before, "bitdust_api_requests_total", method=method, status=status) == 1, (method, status)


def test_packets_that_cannot_go_out_are_counted_by_command(localnet_nodes, customer):
    gone = NodeClient.from_listing(localnet.add(localnet_nodes.root))
    status, doc = gone.call("identity_create", username="metrics-gone")
    assert status == 200, doc
    target = doc["result"]["global_id"]
    node.stop(gone.home)  # its identity stays on node-0's identity server: the ping is sent, and fails
    before = scrape(customer)
    status, _ = customer.call("user_ping", user_id=target, timeout=2)
    assert status != 200
    after = scrape(customer)
    moved = {s.labels["command"]: s.value for s in after["bitdust_transport_send_failures"].samples
             if s.name.endswith("_total")}
    was = {s.labels["command"]: s.value for s in before["bitdust_transport_send_failures"].samples
           if s.name.endswith("_total")}
    assert sum(moved.values()) > sum(was.values()), (was, moved)
    assert value(after, "bitdust_transport_failures_total", direction="out") \
        > value(before, "bitdust_transport_failures_total", direction="out")
