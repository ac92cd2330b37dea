"""The ledger process's bus endpoints: `blockchain_*` and `billing_*`, over the engine (`ledgerd`).

Decodes requests, checks who may do what (foundation miners, contract parties), calls the domain
(`chain`, `market`, `payments`) and emits events. One background task (`_upkeep`) keeps the wallet
loaded and keyed, follows what the wallet receives, lets a foundation miner produce blocks for what
waits in its pool, and pays contracts when their periods start.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from decimal import Decimal
from typing import Any

from common import ids, ledger_engine, network_config, subjects
from common.endpoint import endpoint
from common.fsutil import atomic_write
from common.errors import InvalidArgumentError, NodeError, NotFoundError, UnavailableError
from common.process import ProcessContext, ServiceBase
from services.ledger import wallet_key
from services.ledger.amounts import parse_amount
from services.ledger.billing import Billing
from services.ledger.chain import MAX_RECENT, Chain
from services.ledger.errors import ForbiddenError
from services.ledger.payload import Payload
from services.ledger.rpc import EngineError, EngineRpc
from services.ledger.store import LedgerStore

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often the wallet is asked what it received when the engine does not wake us first (SIGUSR1 on every
wallet transaction and block, see `ledger_engine.wake_command`)."""
FOUNDATION_POLL_SECONDS = 0.1
"""How often a foundation miner looks at its pool: others' transactions wake no one."""
SEED_CHECK_SECONDS = 10.0
WALLET_PURPOSE = "ledger-wallet"
RECEIVED_EVENT = "blockchain-transaction-received"
SERVICES = ("service_bismuth_node", "service_bismuth_wallet", "service_bismuth_blockchain")
ENABLED_OPTION = "services/bismuth-blockchain/enabled"
ALREADY_ADDED = -23
IDENTITY_EVENTS = ("local-identity-created", "local-identity-recovered", "local-identity-erased")
"""A new identity means a new wallet key: derived and imported at the next round."""


class LedgerService(ServiceBase):
    """The ledger process: owns the 9 blockchain/billing methods and the node's wallet."""

    def __init__(self, ctx: ProcessContext):
        super().__init__(ctx)
        self.binary = ledger_engine.binary()
        self.rpc = EngineRpc(lambda: int(ctx.config.get(ledger_engine.RPC_PORT_OPTION)),
                             ledger_engine.cookie_file(ctx.home), ledger_engine.WALLET_NAME)
        self.chain = Chain(self.rpc)
        self.store = LedgerStore(ctx.home.state("ledger") / "ledger.sqlite")
        self.billing = Billing(self.chain, self.store)
        self.state = {"node": "OFF", "wallet": "OFF", "blockchain": "OFF"}
        self.reason = "starting" if self.binary else "litecoind is not installed (scripts/setup.sh installs it)"
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECENT)
        self._cursor: str | None = None
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._wallet_loaded = False
        self._record_published = False
        self._seeds_checked = 0.0
        self._task: asyncio.Task[Any] | None = None
        self._wake = asyncio.Event()
        self._subscriptions: list[Any] = []
        self._foundation: list[str] = []
        self._foundation_read = float("-inf")

    async def start(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._wake.set)
        atomic_write(ledger_engine.pid_file(self.ctx.home), str(os.getpid()).encode())
        for event_id in IDENTITY_EVENTS:
            self._subscriptions.append(await self.ctx.bus.nc.subscribe(subjects.event(event_id),
                                                                       cb=self._on_identity))
        self._task = asyncio.create_task(self._upkeep())

    async def _on_identity(self, _msg: Any) -> None:
        # The old key stays in the wallet (its coins are not lost); the new identity's key is used from now on.
        self.chain.address = None
        self._record_published = False
        self._wake.set()

    async def stop(self) -> None:
        for sub in self._subscriptions:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the bus may be closing
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.store.close()

    # ---- the background task ------------------------------------------------------------------

    async def _upkeep(self) -> None:
        """A full round when the engine wakes us or every `POLL_SECONDS`; a foundation miner also looks
        at its pool every `FOUNDATION_POLL_SECONDS` in between."""
        last_round = float("-inf")
        while True:
            full = self._wake.is_set() or time.monotonic() - last_round >= POLL_SECONDS
            self._wake.clear()
            if self.binary is not None:
                try:
                    if full:
                        last_round = time.monotonic()
                        await self._tick()
                    elif self.is_foundation():
                        await self._produce_for_pool()
                except UnavailableError as err:
                    self._engine_lost(err.message)
                except NodeError as err:
                    log.warning("ledger upkeep: %s", err.message)
                except Exception:  # noqa: BLE001 - one bad round must not end the upkeep
                    log.exception("ledger upkeep failed")
            wait = FOUNDATION_POLL_SECONDS if self.is_foundation() else POLL_SECONDS
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def is_foundation(self) -> bool:
        return self.chain.address is not None and self.chain.address in self._foundation_cached()

    def _foundation_cached(self) -> list[str]:
        """The foundation miners, read again from the network configuration at most once a second."""
        now = time.monotonic()
        if now - self._foundation_read > 1.0:
            self._foundation = self.foundation()
            self._foundation_read = now
        return self._foundation

    async def _produce_for_pool(self) -> None:
        if self.ctx.config.get("services/bismuth-node/auto-produce") and await self.chain.pool_size() > 0:
            await self.chain.produce(1)

    def _engine_lost(self, why: str) -> None:
        if self.state["node"] != "OFF":
            log.warning("blockchain engine lost: %s", why)
        self.state = {"node": "OFF", "wallet": "OFF", "blockchain": "OFF"}
        self.reason = why
        self._wallet_loaded = False

    async def _tick(self) -> None:
        if not self._wallet_loaded:
            await self.chain.load_wallet()
            self._wallet_loaded = True
            self._seeds_checked = 0.0
        self.state["node"] = "ON"
        if self.chain.address is None:
            await self._key_wallet()
        if self.chain.address is not None:
            self.state["wallet"] = "ON"
            if not self._record_published:
                await self._publish_wallet_record()
        if time.monotonic() - self._seeds_checked > SEED_CHECK_SECONDS:
            await self._connect_seeds()
            self._seeds_checked = time.monotonic()
        await self._follow_received()
        if self.chain.address is not None:
            for what, record in await self.billing.scan():
                await self.ctx.bus.publish_event(f"billing-{what}-seen", {"id": record.txid, "sender": record.sender})
            for contract_id, period, txid in await self.billing.pay_due():
                log.info("paid period %d of contract %s: %s", period, contract_id, txid)
                await self.ctx.bus.publish_event("billing-period-paid", {
                    "contract_id": contract_id, "period": period, "transaction_id": txid})
        if self.is_foundation():
            await self._produce_for_pool()
        self.state["blockchain"] = "ON"
        self.reason = ""

    async def _key_wallet(self) -> None:
        try:
            reply = await self.ctx.bus.call_internal("identity", "derive_secret", purpose=WALLET_PURPOSE)
        except NodeError as err:
            self.state["wallet"] = "OFF"
            self.reason = f"the wallet waits for an identity: {err.message}"
            return
        address = await self.chain.import_key(bytes.fromhex(str(reply["secret"])))
        log.info("wallet address %s", address)

    async def _publish_wallet_record(self) -> None:
        """A signed DHT record maps our IDURL to our address (`recipient` may be a user id)."""
        try:
            me = await self.ctx.bus.call_internal("identity", "my_identity")
            await self.ctx.bus.call_internal("dht", "write_record", record_type="wallet", key=me["idurl"],
                                             value={"idurl": me["idurl"], "address": self.chain.address},
                                             timeout=30)
            self._record_published = True
        except NodeError as err:
            log.info("wallet record not published yet: %s", err.message)

    async def _connect_seeds(self) -> None:
        mine = {f"127.0.0.1:{self.ctx.config.get(ledger_engine.P2P_PORT_OPTION)}"}
        network = self.network()
        for seed in network.ledger_seeds if network else []:
            if seed in mine:
                continue
            try:
                await self.rpc.call("addnode", seed, "add")
            except EngineError as err:
                if err.code != ALREADY_ADDED:
                    raise

    async def _follow_received(self) -> None:
        received, cursor = await self.chain.since(self._cursor)
        first = self._cursor is None
        if first:
            # After a restart: what came before is listed again by `blockchain_info`, newest first.
            for item in [t for t in received if int(t.get("confirmations", 0)) > 0][-MAX_RECENT:]:
                transfer = await self.chain.transfer(str(item.get("txid")), int(item.get("confirmations", 0)))
                if transfer is not None and transfer.recipient == self.chain.address:
                    self.recent.appendleft(transfer.to_dict())
        self._cursor = cursor if not received or all(t.get("confirmations", 0) > 0 for t in received) else self._cursor
        for item in received:
            txid = str(item.get("txid"))
            if txid in self._seen:
                continue
            self._seen[txid] = None
            while len(self._seen) > 4096:
                self._seen.popitem(last=False)
            if first and int(item.get("confirmations", 0)) > 0:
                continue  # from before this process started: shown (below), not announced again
            transfer = await self.chain.transfer(txid, int(item.get("confirmations", 0)))
            if transfer is None or transfer.recipient != self.chain.address:
                continue
            self.recent.appendleft(transfer.to_dict())
            await self.ctx.bus.publish_event(RECEIVED_EVENT, transfer.to_dict())

    # ---- configuration ------------------------------------------------------------------------

    def network(self) -> network_config.NetworkConfig | None:
        return network_config.load_selected(self.ctx.home.networks_dir,
                                            str(self.ctx.config.get("services/network/selected")))

    def foundation(self) -> list[str]:
        network = self.network()
        return list(network.foundation_miners) if network else []

    def require_engine(self) -> None:
        """503 unless the engine is installed, switched on and answering."""
        if self.binary is None:
            raise UnavailableError(self.reason, reason="ledger_engine_absent")
        if not self.ctx.config.get(ENABLED_OPTION):
            raise UnavailableError("service_bismuth_blockchain is switched off", reason="service_disabled")

    async def resolve_recipient(self, recipient: Any) -> str:
        """An address as given, or the address a user id's signed wallet record names."""
        if not isinstance(recipient, str) or not recipient.strip():
            raise InvalidArgumentError("recipient must be a wallet address or a user id", reason="invalid_recipient")
        recipient = recipient.strip()
        if wallet_key.is_address(recipient):
            return recipient
        if "@" not in recipient and not recipient.startswith("http"):
            raise InvalidArgumentError(f"{recipient!r} is not a wallet address or a user id",
                                       reason="invalid_recipient")
        idurl = ids.idurl_of(recipient)
        reply = await self.ctx.bus.call_internal("dht", "read_record", record_type="wallet", key=idurl, timeout=30)
        value = reply.get("value") if reply.get("read") == "success" else None
        # The DHT checked the signature is the owner's (`idurl`); the record must also be about this user.
        if not isinstance(value, dict) or value.get("idurl") != idurl or not wallet_key.is_address(
                str(value.get("address", ""))):
            raise NotFoundError(f"no wallet is known for {recipient}", reason="recipient_not_found")
        return str(value["address"])

    # ---- internal verbs -----------------------------------------------------------------------

    @endpoint("service_states", internal=True)
    async def service_states(self) -> dict[str, Any]:
        """The states of the three bismuth services as this process sees the engine, and why."""
        states = {
            "service_bismuth_node": self.state["node"],
            "service_bismuth_wallet": self.state["wallet"],
            "service_bismuth_blockchain": self.state["blockchain"],
        }
        return {"states": states, "reason": self.reason}

    @endpoint("customer_contract", internal=True)
    async def customer_contract(self, customer_idurl: str) -> dict[str, Any]:
        """The state of a customer's storage contract with this node as supplier (`none` without one):
        what storage asks when contracts are required (`services/storage/contract_rules.py`)."""
        self.require_engine()
        self.chain.require_address()
        try:
            customer = await self.resolve_recipient(customer_idurl)
        except NotFoundError:
            return {"state": "none", "contract_id": None}
        return self.billing.customer_state(customer)

    # ---- blockchain_* -------------------------------------------------------------------------

    @endpoint()
    async def blockchain_info(self) -> dict[str, Any]:
        self.require_engine()
        info = await self.chain.info(int(self.ctx.config.get(ledger_engine.P2P_PORT_OPTION)), self.foundation())
        info["wallet"]["transactions"] = list(self.recent)
        return info

    @endpoint()
    async def blockchain_wallet_balance(self) -> dict[str, Any]:
        self.require_engine()
        return await self.chain.balance()

    @endpoint()
    async def blockchain_transaction_send(self, recipient: Any, amount: Any, operation: Any = "",
                                          data: Any = "") -> dict[str, Any]:
        self.require_engine()
        value: Decimal = parse_amount(amount)
        if not isinstance(operation, str) or not isinstance(data, str):
            raise InvalidArgumentError("operation and data must be text", reason="invalid_argument")
        address = await self.resolve_recipient(recipient)
        txid = await self.chain.send(address, value, Payload(operation, data))
        await self.ctx.bus.publish_event("blockchain-transaction-sent", {
            "transaction_id": txid, "recipient": address, "amount": float(value), "operation": operation})
        return {"transaction_id": txid}

    @endpoint()
    async def blockchain_block_produce(self) -> dict[str, Any]:
        self.require_engine()
        address = self.chain.require_address()
        if address not in self.foundation():
            raise ForbiddenError(f"{address} is not a foundation miner of this network",
                                 reason="not_foundation_miner")
        hashes = await self.chain.produce(1)
        return {"block_hash": hashes[0], "blocks": int(await self.rpc.call("getblockcount"))}

    # ---- billing_* ----------------------------------------------------------------------------

    @endpoint()
    async def billing_info(self) -> dict[str, Any]:
        self.require_engine()
        self.chain.require_address()
        return self.billing.info()

    @endpoint()
    async def billing_offers_list(self, supplier: Any = None, include_expired: bool = False) -> list[dict[str, Any]]:
        self.require_engine()
        address = await self.resolve_recipient(supplier) if supplier else None
        return self.billing.offers_list(address, bool(include_expired))

    @endpoint()
    async def billing_offer_create(self, space_gb: Any, price: Any, duration_hours: Any,
                                   expires_hours: Any = 24.0) -> dict[str, Any]:
        self.require_engine()
        return await self.billing.offer_create(space_gb, price, duration_hours, expires_hours)

    @endpoint()
    async def billing_bid_create(self, offer_id: Any, space_gb: Any, duration_hours: Any,
                                 periods: Any = 0) -> dict[str, Any]:
        self.require_engine()
        return await self.billing.bid_create(offer_id, space_gb, duration_hours, periods)

    @endpoint()
    async def billing_bid_accept(self, bid_id: Any) -> dict[str, Any]:
        self.require_engine()
        return await self.billing.bid_accept(bid_id)
