"""The ledger end to end, through the REST API only: coins, transfers with a payload, block production,
the storage market and its payments, also across kill -9 of the engine and of the ledger process."""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from typing import Any, Iterator

import pytest

from deploy import localnet, netns, node
from tests.e2e.client import NodeClient
from tests.e2e.conftest import PORT_OFFSET
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(not node.ENGINE_PROGRAMS, reason="litecoind is not installed (scripts/setup.sh)")

HALVING = 150
NETNS_OFFSET = PORT_OFFSET + 4000
"""Regtest halves the block subsidy every 150 blocks."""


@pytest.fixture(scope="module")
def ledger(localnet_nodes, identities) -> dict[str, Any]:
    """Node 0 the foundation miner, every other node its bonus (`bitdust localnet up` does the same)."""
    return localnet.ledger_foundation(localnet_nodes.root, timeout=120, count=len(localnet_nodes.nodes))


def _balance(client: NodeClient) -> dict[str, Any]:
    return client.ok("blockchain_wallet_balance")


def _received(client: NodeClient, txid: str) -> dict[str, Any] | None:
    items = client.ok("blockchain_info")["wallet"]["transactions"]
    return next((t for t in items if t["transaction_id"] == txid), None)


def _pids(client: NodeClient) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in client.ok("process_info")["processes"] if p["state"] == "RUNNING"}


def test_every_node_got_its_bonus_and_the_services_are_on(net, ledger):
    foundation = ledger["foundation"]
    for client, address in zip(net.nodes[1:], ledger["addresses"][1:], strict=True):
        balance = _balance(client)
        assert balance["address"] == address and balance["balance"] >= float(localnet.REGISTRATION_BONUS)
    info = net.nodes[1].ok("blockchain_info")
    assert set(info) == {"node", "wallet", "miner"} and info["node"]["chain"] == "regtest"
    assert info["node"]["blocks"] >= localnet.FIRST_BLOCKS and info["node"]["connections"] >= 1
    states = {s["name"]: s["state"] for s in net.nodes[1].ok("services_list")}
    assert {states[n] for n in ("service_bismuth_blockchain", "service_bismuth_wallet", "service_bismuth_node")} == {
        "ON"}
    assert net.nodes[0].ok("blockchain_info")["miner"]["address"] == foundation


def test_transfer_to_a_user_id_carries_its_payload_to_the_recipient(net, ledger, identities):
    sender, recipient = net.nodes[1], net.nodes[2]
    before = _balance(recipient)["balance"]
    sent = sender.ok("blockchain_transaction_send", recipient=identities[recipient.name]["global_id"],
                     amount="1.25", operation="note", data="for the photos")
    seen = wait_for(lambda: _received(recipient, sent["transaction_id"]), timeout=20, interval=0.2,
                    what="the transfer seen by the recipient")
    assert (seen["operation"], seen["data"], seen["amount"]) == ("note", "for the photos", 1.25)
    assert seen["sender"] == ledger["addresses"][1]
    # The foundation miner mines what waits in its pool: the transfer gets into a block.
    wait_for(lambda: abs(_balance(recipient)["balance"] - (before + 1.25)) < 1e-9, timeout=20, interval=0.2,
             what="the transfer in a block")


def test_a_wallet_record_signed_by_someone_else_never_redirects_a_payment(net, ledger, identities):
    # Node 1 signs (with its own key, so the DHT stores it) a wallet record at the IDURL of a user who has none
    # yet, naming node 1's address. The DHT keeps the first signer's record at a key: a payer must not pay it.
    thief, payer = net.nodes[1], net.nodes[0]
    victim_idurl = identities[thief.name]["idurl"].rsplit("/", 1)[0] + "/nowallet.xml"
    written = thief.ok("dht_value_set", key=victim_idurl, record_type="wallet",
                       value={"idurl": identities[thief.name]["idurl"], "address": ledger["addresses"][1]})
    assert written["write"] == "success"
    thief_before = _balance(thief)
    status, doc = payer.call("blockchain_transaction_send", recipient=victim_idurl, amount="0.5")
    assert (status, doc["reason"]) == (404, "recipient_not_found"), doc
    after = _balance(thief)
    assert (after["balance"], after["unconfirmed"]) == (thief_before["balance"], thief_before["unconfirmed"])


def test_only_a_foundation_miner_produces_blocks(net, ledger):
    status, doc = net.nodes[1].call("blockchain_block_produce")
    assert (status, doc["reason"]) == (403, "not_foundation_miner")
    before = net.nodes[0].ok("blockchain_info")["node"]["blocks"]
    assert net.nodes[0].ok("blockchain_block_produce")["blocks"] == before + 1


@pytest.mark.parametrize(("kwargs", "status", "reason"), [
    ({"amount": 0}, 400, "invalid_amount"),
    ({"amount": "-1"}, 400, "invalid_argument"),
    ({"amount": "abc"}, 400, "invalid_argument"),
    ({"amount": "NaN"}, 400, "invalid_argument"),
    ({"amount": "1.123456789"}, 400, "invalid_amount"),
    ({"amount": 5000}, 409, "insufficient_funds"),
    ({"amount": 1, "recipient": "not-an-address"}, 400, "invalid_recipient"),
    ({"amount": 1, "recipient": "nobody@127.0.0.1_1"}, 404, "recipient_not_found"),
    ({"amount": 1, "data": "x" * 1000}, 400, "data_too_long"),
    ({"amount": 1, "operation": "Not Valid"}, 400, "invalid_operation"),
])
def test_bad_transfers_are_refused_and_nothing_is_sent(net, ledger, kwargs, status, reason):
    client = net.nodes[1]
    before = _balance(client)
    call = {"recipient": ledger["addresses"][2], **kwargs}
    got, doc = client.call("blockchain_transaction_send", **call)
    assert (got, doc["reason"]) == (status, reason), doc
    after = _balance(client)
    assert (after["balance"], after["unconfirmed"]) == (before["balance"], before["unconfirmed"])


def test_bad_market_calls(net, ledger):
    supplier, customer, other = net.nodes[1], net.nodes[2], net.nodes[0]
    status, doc = customer.call("billing_bid_create", offer_id="0" * 64, space_gb=1, duration_hours=1)
    assert (status, doc["reason"]) == (404, "offer_not_found")
    short = supplier.ok("billing_offer_create", space_gb=1, price="0.1", duration_hours=1, expires_hours=0.0003)
    wait_for(lambda: any(o["offer_id"] == short["offer_id"] and o["expired"]
                         for o in customer.ok("billing_offers_list", include_expired=True)),
             timeout=20, interval=0.2, what="the short offer seen and expired")
    status, doc = customer.call("billing_bid_create", offer_id=short["offer_id"], space_gb=1, duration_hours=1)
    assert (status, doc["reason"]) == (409, "offer_expired")
    assert short["offer_id"] not in {o["offer_id"] for o in customer.ok("billing_offers_list")}
    offer = supplier.ok("billing_offer_create", space_gb=1, price="0.1", duration_hours=1)
    wait_for(lambda: customer.call("billing_bid_create", offer_id=offer["offer_id"], space_gb=2,
                                   duration_hours=1)[1].get("reason") == "invalid_amount",
             timeout=20, interval=0.2, what="a bid for more space than offered refused")
    bid = customer.ok("billing_bid_create", offer_id=offer["offer_id"], space_gb=1, duration_hours=1)
    wait_for(lambda: other.call("billing_bid_accept", bid_id=bid["bid_id"])[1].get("reason") == "not_offer_supplier",
             timeout=20, interval=0.2, what="an accept by a node that is not the supplier refused")
    status, doc = supplier.call("billing_bid_accept", bid_id="f" * 64)
    assert (status, doc["reason"]) == (404, "bid_not_found")


def _contract(client: NodeClient, contract_id: str) -> dict[str, Any] | None:
    return next((c for c in client.ok("billing_info")["contracts"] if c["contract_id"] == contract_id), None)


def _total_coin(blocks: int) -> Decimal:
    return sum((Decimal(50) / 2 ** (height // HALVING) for height in range(1, blocks + 1)), Decimal(0))


def test_market_pays_each_period_once_across_kill_9(net, ledger):
    supplier, customer = net.nodes[1], net.nodes[2]
    offer = supplier.ok("billing_offer_create", space_gb=2, price="10", duration_hours=0.004)
    wait_for(lambda: any(o["offer_id"] == offer["offer_id"] for o in customer.ok("billing_offers_list")),
             timeout=20, interval=0.2, what="the offer seen by the customer")
    bid = customer.ok("billing_bid_create", offer_id=offer["offer_id"], space_gb=2, duration_hours=0.004, periods=4)
    wait_for(lambda: any(b["bid_id"] == bid["bid_id"] for b in supplier.ok("billing_info")["bids"]),
             timeout=20, interval=0.2, what="the bid seen by the supplier")
    contract_id = supplier.ok("billing_bid_accept", bid_id=bid["bid_id"])["contract_id"]
    # Four periods of 3.6 s, the first paid as the contract begins: kill the customer's engine, then its ledger.
    pids = _pids(customer)
    os.kill(pids["ledgerd"], signal.SIGKILL)
    wait_for(lambda: (_contract(customer, contract_id) or {}).get("paid_periods") or None, timeout=60,
             interval=0.2, what="a period paid after the engine came back")
    os.kill(_pids(customer)["ledger"], signal.SIGKILL)
    net.wait_healthy(60)
    done = wait_for(lambda: (c := _contract(supplier, contract_id)) and c["state"] == "completed" and c,
                    timeout=60, interval=0.3, what="the contract completed, every period paid")
    assert done["paid_periods"] == [0, 1, 2, 3] and done["payments_seen"] == 4
    mine = wait_for(lambda: (c := _contract(customer, contract_id)) and c["state"] == "completed" and c,
                    timeout=30, interval=0.3, what="the customer sees it completed")
    assert mine["payments_seen"] == 4
    supplier_info, customer_info = supplier.ok("billing_info"), customer.ok("billing_info")
    assert supplier_info["earned"] >= 4 * done["period_amount"] and customer_info["debt"] == 0
    assert abs(done["period_amount"] * 4 - 2 * 10 * 0.004) < 1e-9

    # Balances add up to the coin: every block's subsidy, fees included, is in some node's wallet.
    def settled() -> tuple[int, Decimal] | None:
        blocks = net.nodes[0].ok("blockchain_info")["node"]["blocks"]
        total = Decimal(0)
        for client in net.nodes:
            b = _balance(client)
            total += Decimal(str(b["balance"])) + Decimal(str(b["unconfirmed"])) + Decimal(str(b["immature"]))
        return (blocks, total) if total == _total_coin(blocks) else None

    wait_for(settled, timeout=30, interval=0.5, what="the balances to add up to every block's subsidy")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three nodes, each a host of its own (network namespaces); `localnet.up` sets the ledger up too."""
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("ledger-netns")
    try:
        doc = localnet.up(root, 3, NETNS_OFFSET, identities=True, timeout=120, namespaces=True)
        yield {"clients": [NodeClient.from_listing(item) for item in doc["nodes"]], "ledger": doc["ledger"]}
    finally:
        localnet.down(root)


def test_across_hosts_a_transfer_and_a_contract_are_paid(hosts):
    foundation, supplier, customer = hosts["clients"]
    assert foundation.ok("blockchain_info")["node"]["connections"] >= 2
    sent = supplier.ok("blockchain_transaction_send", recipient=hosts["ledger"]["addresses"][2], amount="0.75",
                       operation="note", data="across hosts")
    seen = wait_for(lambda: _received(customer, sent["transaction_id"]), timeout=30, interval=0.2,
                    what="the transfer seen across hosts")
    assert (seen["operation"], seen["data"]) == ("note", "across hosts")
    offer = supplier.ok("billing_offer_create", space_gb=1, price="5", duration_hours=0.002)
    wait_for(lambda: any(o["offer_id"] == offer["offer_id"] for o in customer.ok("billing_offers_list")),
             timeout=30, interval=0.2, what="the offer seen across hosts")
    bid = customer.ok("billing_bid_create", offer_id=offer["offer_id"], space_gb=1, duration_hours=0.002, periods=2)
    wait_for(lambda: any(b["bid_id"] == bid["bid_id"] for b in supplier.ok("billing_info")["bids"]),
             timeout=30, interval=0.2, what="the bid seen across hosts")
    contract_id = supplier.ok("billing_bid_accept", bid_id=bid["bid_id"])["contract_id"]
    done = wait_for(lambda: (c := _contract(supplier, contract_id)) and c["state"] == "completed" and c,
                    timeout=60, interval=0.3, what="the contract completed across hosts")
    assert done["paid_periods"] == [0, 1] and done["payments_seen"] == 2


def test_a_supplier_requiring_contracts_drops_an_overdue_customer_and_refuses_it(net, ledger, identities):
    # A customer node and one of its suppliers; the customer bids on an offer it cannot pay, so its contract
    # with that supplier is overdue once the first period's grace has passed.
    customer = net.nodes[2]
    by_idurl = {identities[c.name]["idurl"]: c for c in net.nodes}
    suppliers = wait_for(lambda: [by_idurl[i["idurl"]] for i in customer.ok("suppliers_list")
                                  if i["supplier_state"] == "CONNECTED" and i["idurl"] in by_idurl],
                         timeout=120, interval=0.5, what="the customer's suppliers")
    supplier = suppliers[0]
    customer_idurl = identities[customer.name]["idurl"]
    assert customer_idurl in {c["idurl"] for c in supplier.ok("customers_list")}
    offer = supplier.ok("billing_offer_create", space_gb=1, price="1000", duration_hours=1)
    wait_for(lambda: any(o["offer_id"] == offer["offer_id"] for o in customer.ok("billing_offers_list")),
             timeout=20, interval=0.2, what="the offer seen by the customer")
    bid = customer.ok("billing_bid_create", offer_id=offer["offer_id"], space_gb=1, duration_hours=1, periods=1)
    wait_for(lambda: any(b["bid_id"] == bid["bid_id"] for b in supplier.ok("billing_info")["bids"]),
             timeout=20, interval=0.2, what="the bid seen by the supplier")
    contract_id = supplier.ok("billing_bid_accept", bid_id=bid["bid_id"])["contract_id"]
    supplier.ok("config_set", key="services/supplier/overdue-grace", value=0)
    supplier.ok("config_set", key="services/supplier/require-contract", value=True)
    try:
        wait_for(lambda: (_contract(supplier, contract_id) or {}).get("state") == "overdue", timeout=60,
                 interval=0.5, what="the unpaid contract overdue")
        wait_for(lambda: customer_idurl not in {c["idurl"] for c in supplier.ok("customers_list")}, timeout=30,
                 interval=0.3, what="the overdue customer's data dropped")
        # The customer's employer asks again; the supplier refuses it while the contract is overdue (the refusal's
        # reason, no_current_contract, is checked in tests/unit/test_ledger_storage_option.py). The customer then
        # shows it as not connected, or has already replaced it.
        supplier_idurl = identities[supplier.name]["idurl"]
        wait_for(lambda: not any(i["idurl"] == supplier_idurl and i["supplier_state"] == "CONNECTED"
                                 for i in customer.ok("suppliers_list")), timeout=60, interval=0.5,
                 what="the supplier no longer serving the customer")
        assert customer_idurl not in {c["idurl"] for c in supplier.ok("customers_list")}
    finally:
        supplier.ok("config_set", key="services/supplier/require-contract", value=False)
        supplier.ok("config_set", key="services/supplier/overdue-grace", value=24 * 3600)
