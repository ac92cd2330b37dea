"""The ledger's domain against a real engine: Debian's litecoind on a regtest chain of its own."""

from __future__ import annotations

import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from common import ledger_engine
from common.config_store import ConfigStore
from common.errors import ConflictError, UnavailableError
from common.home import NodeHome
from services.ledger import market, wallet_key
from services.ledger.billing import Billing
from services.ledger.book import Record
from services.ledger.chain import Chain
from services.ledger.payload import Payload
from services.ledger.rpc import EngineRpc
from services.ledger.store import LedgerStore
from tests.helpers import await_for, free_port

pytestmark = pytest.mark.skipif(ledger_engine.binary() is None, reason="litecoind is not installed (scripts/setup.sh)")

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))


def _start_engine(home: NodeHome, peer: NodeHome | None = None) -> subprocess.Popen[bytes]:
    """An engine for `home` as supervisord would run it (`ledger_engine.argv`), dialling `peer`'s if given."""
    home.ensure()
    config = ConfigStore(home.options_file)
    config.set_many({ledger_engine.P2P_PORT_OPTION: free_port(), ledger_engine.RPC_PORT_OPTION: free_port(),
                     ledger_engine.LISTEN_HOST_OPTION: "127.0.0.1"})
    ledger_engine.data_dir(home).mkdir(parents=True)
    binary = ledger_engine.binary()
    assert binary is not None
    extra = []
    if peer is not None:
        extra = [f"-addnode=127.0.0.1:{ConfigStore(peer.options_file).get(ledger_engine.P2P_PORT_OPTION)}"]
    return subprocess.Popen(ledger_engine.argv(home, config, binary) + extra, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.fixture
def engine_home(tmp_path: Path) -> Iterator[NodeHome]:
    """A node home with its engine running."""
    home = NodeHome(tmp_path / "node")
    proc = _start_engine(home)
    try:
        yield home
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _rpc(home: NodeHome) -> EngineRpc:
    config = ConfigStore(home.options_file)
    return EngineRpc(lambda: int(config.get(ledger_engine.RPC_PORT_OPTION)), ledger_engine.cookie_file(home),
                     ledger_engine.WALLET_NAME)


async def _ready_chain(home: NodeHome, secret: bytes) -> Chain:
    rpc = _rpc(home)

    async def ready() -> bool:
        try:
            await rpc.call("getblockcount")
            return True
        except UnavailableError:
            return False

    await await_for(ready, timeout=30, interval=0.05, what="the engine answering RPC")
    found = Chain(rpc)
    await found.load_wallet()
    await found.import_key(secret)
    return found


@pytest.fixture
async def chain(engine_home: NodeHome) -> AsyncIterator[Chain]:
    yield await _ready_chain(engine_home, SECRET)


async def test_the_derived_key_is_the_engines_own(chain: Chain):
    number = wallet_key.private_number(SECRET)
    assert chain.address == wallet_key.address(number)
    info = await chain.engine.call("getaddressinfo", chain.address, wallet=True)
    assert info["ismine"] and info["pubkey"] == wallet_key.compressed_public_key(number).hex()
    assert await chain.engine.call("dumpprivkey", chain.address, wallet=True) == wallet_key.wif(number)


async def test_a_transfer_carries_its_payload_and_change_stays_at_our_address(chain: Chain):
    await chain.produce(101)
    other = wallet_key.address(wallet_key.private_number(OTHER))
    txid = await chain.send(other, Decimal("1.5"), Payload("storage", "é" * 400))
    transfer = await chain.transfer(txid)
    assert transfer is not None
    assert (transfer.sender, transfer.recipient, transfer.amount) == (chain.address, other, Decimal("1.5"))
    assert (transfer.operation, transfer.data) == ("storage", "é" * 400)
    await chain.produce(1)
    coins = await chain.engine.call("listunspent", 0, 9999, [], True, wallet=True)
    assert coins and {c["address"] for c in coins} == {chain.address}


async def test_more_than_the_balance_is_refused_and_nothing_is_sent(chain: Chain):
    other = wallet_key.address(wallet_key.private_number(OTHER))
    with pytest.raises(ConflictError) as err:
        await chain.send(other, Decimal(1), Payload())
    assert err.value.reason == "insufficient_funds"
    assert await chain.pool_size() == 0


async def test_engine_down_is_503(tmp_path: Path):
    home = NodeHome(tmp_path / "down")
    home.ensure()
    ConfigStore(home.options_file).set(ledger_engine.RPC_PORT_OPTION, free_port())
    with pytest.raises(UnavailableError) as err:
        await _rpc(home).call("getblockcount")
    assert err.value.reason == "ledger_engine_down" and err.value.status == 503


def _contract_records(customer: str, supplier: str, now: float) -> list[Record]:
    offer = Record("a" * 64, "offer", supplier, "", Decimal(0), market.encode(
        {"space_gb": "1", "price": "1", "duration_hours": "2", "expires_hours": "1"}), now - 10)
    bid = Record("b" * 64, "bid", customer, "", Decimal(0), market.encode(
        {"offer_id": "a" * 64, "space_gb": "1", "duration_hours": "2", "periods": 2}), now - 5)
    accept = Record("c" * 64, "accept", supplier, "", Decimal(0), market.encode(
        {"bid_id": "b" * 64, "started": now - 1}), now - 1)
    return [offer, bid, accept]


async def test_a_period_signed_before_a_crash_is_paid_by_that_transaction_once(chain: Chain, tmp_path: Path):
    await chain.produce(101)
    assert chain.address is not None
    supplier = wallet_key.address(wallet_key.private_number(OTHER))
    store = LedgerStore(tmp_path / "ledger.sqlite")
    store.add_records(_contract_records(chain.address, supplier, time.time()))
    billing = Billing(chain, store)
    contract = billing.book.contracts["c" * 64]
    # What `pay_due` writes before it broadcasts, then the node is killed: the intent is on disk, unsent.
    txid, signed = await chain.build(supplier, contract.period_amount,
                                      Payload("storage", market.encode({"contract_id": "c" * 64, "period": 0})))
    assert store.add_intent("c" * 64, 0, txid, signed)
    store.close()

    restarted = Billing(chain, LedgerStore(tmp_path / "ledger.sqlite"))
    assert await restarted.pay_due() == [("c" * 64, 0, txid)]  # the same transaction, not a second one
    assert await restarted.pay_due() == []  # in the pool: nothing more until the scan sees it
    await chain.produce(1)
    await restarted.scan()
    assert restarted.book.paid_periods("c" * 64) == {0} and restarted.book.payments_seen["c" * 64] == 1
    assert await restarted.pay_due() == []
    info = restarted.info()
    assert info["spent"] == float(contract.period_amount) and info["debt"] == 0




async def test_the_same_identity_secret_on_a_fresh_engine_finds_its_coins(engine_home: NodeHome, chain: Chain,
                                                                          tmp_path: Path):
    # What `identity_recover` on another machine amounts to: the same derived secret, a new engine and wallet.
    await chain.produce(101)
    other = wallet_key.address(wallet_key.private_number(OTHER))
    await chain.send(other, Decimal("2"), Payload())
    await chain.produce(1)
    before = (await chain.balance())["balance"]
    fresh_home = NodeHome(tmp_path / "recovered")
    proc = _start_engine(fresh_home, peer=engine_home)
    try:
        rpc = _rpc(fresh_home)

        async def synced() -> bool:
            try:
                return int(await rpc.call("getblockcount")) == 102
            except UnavailableError:
                return False

        await await_for(synced, timeout=60, interval=0.1, what="the fresh engine synced")
        recovered = await _ready_chain(fresh_home, SECRET)
        assert recovered.address == chain.address
        assert (await recovered.balance())["balance"] == before
    finally:
        proc.terminate()
        proc.wait(timeout=30)
