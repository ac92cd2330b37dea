"""The billing side of the ledger: follow the chain's market records, make offers, bids and contracts,
and pay contracts per period exactly once.

Orchestration over `Chain` (the engine), `LedgerStore` (disk) and `Book` (the rules applied); no bus.
"""

from __future__ import annotations

import collections
import logging
import time
from decimal import Decimal
from typing import Any, Callable

from common.errors import ConflictError, NodeError, NotFoundError
from services.ledger import market
from services.ledger.book import Book, Record
from services.ledger.chain import Chain
from services.ledger.payload import Payload
from services.ledger.rpc import EngineError
from services.ledger.store import LedgerStore

log = logging.getLogger(__name__)

ALREADY_KNOWN = ("already in block chain", "txn-already-known", "txn-already-in-mempool")
"""The engine's answers to a broadcast of a transaction it has: the intent stands."""
DEAD = ("missingorspent", "txn-mempool-conflict")
"""Answers that mean the intent's transaction can never be mined: its inputs went elsewhere."""


class Billing:
    """Offers, bids, contracts and payments of one node, kept in step with the chain."""

    def __init__(self, chain: Chain, store: LedgerStore, clock: Callable[[], float] = time.time):
        self.chain = chain
        self.store = store
        self.clock = clock
        self.book = Book()
        for record in store.records():
            self.book.apply(record)
        self._pool_checked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._unpayable: set[tuple[str, int]] = set()
        """Periods we could not pay (warned once each; retried every round)."""

    # ---- following the chain ------------------------------------------------------------------

    async def scan(self) -> list[tuple[str, Record]]:
        """Apply the records of new blocks, then of the pool; what each one made."""
        made: list[tuple[str, Record]] = []
        height = int(await self.chain.engine.call("getblockcount"))
        scanned = self.store.scanned_height()
        for at in range(scanned + 1, height + 1):
            txs, block_time = await self.chain.block(at)
            records = []
            for tx in txs:
                if tx["txid"] not in self.book.known:
                    record = await self.chain.record_of(tx, min(block_time, self.clock()))
                    if record is not None:
                        records.append(record)
            self.store.add_records(records, scanned_height=at)
            for record in records:
                what = self.book.apply(record)
                if what:
                    made.append((what, record))
        pool = await self.chain.pool(set(self._pool_checked) | self.book.known)
        for tx in pool:
            self._remember(tx["txid"])
            record = await self.chain.record_of(tx, self.clock())
            if record is not None:
                self.store.add_records([record])
                what = self.book.apply(record)
                if what:
                    made.append((what, record))
        return made

    def _remember(self, txid: str) -> None:
        self._pool_checked[txid] = None
        while len(self._pool_checked) > 4096:
            self._pool_checked.popitem(last=False)

    async def _publish(self, operation: str, data: dict[str, Any]) -> Record:
        """Put one market record on-chain from our address and apply it here at once."""
        txid, signed = await self.chain.build(None, None, Payload(operation, market.encode(data)))
        await self.chain.broadcast(signed)
        record = Record(txid, operation, self.chain.require_address(), "", Decimal(0), market.encode(data),
                        self.clock())
        self.store.add_records([record])
        self.book.apply(record)
        return record

    # ---- the API's operations -----------------------------------------------------------------

    async def offer_create(self, space_gb: Any, price: Any, duration_hours: Any, expires_hours: Any) -> dict[str, Any]:
        terms = market.offer_terms(space_gb, price, duration_hours, expires_hours)
        record = await self._publish("offer", terms)
        return self.book.offers[record.txid].to_dict(self.clock())

    def offers_list(self, supplier: str | None, include_expired: bool) -> list[dict[str, Any]]:
        now = self.clock()
        return [o.to_dict(now) for o in self.book.offers.values()
                if (include_expired or now < o.expires) and (not supplier or o.supplier == supplier)]

    async def bid_create(self, offer_id: Any, space_gb: Any, duration_hours: Any, periods: Any) -> dict[str, Any]:
        offer = self.book.offers.get(str(offer_id))
        terms = market.bid_terms(offer, space_gb, duration_hours, periods, self.clock())
        if offer is not None and offer.supplier == self.chain.require_address():
            raise ConflictError("a supplier cannot bid on its own offer", reason="own_offer")
        record = await self._publish("bid", terms)
        bid = self.book.bids.get(record.txid)
        if bid is None:
            raise ConflictError("the offer expired while the bid was sent", reason="offer_expired")
        return bid.to_dict()

    async def bid_accept(self, bid_id: Any) -> dict[str, Any]:
        bid = market.check_accept(self.book.bids.get(str(bid_id)), self.chain.require_address(),
                                  self.book.contracts)
        record = await self._publish("accept", {"bid_id": bid.bid_id, "started": self.clock()})
        contract = self.book.contracts.get(record.txid)
        if contract is None:
            raise NodeError("the accept did not make a contract", reason="accept_failed")
        return contract.to_dict(self.book.paid_periods(contract.contract_id), self.clock())

    def info(self) -> dict[str, Any]:
        me = self.chain.address
        now = self.clock()
        contracts = [c for c in self.book.contracts.values() if me in (c.customer, c.supplier)]
        earned = spent = debt = Decimal(0)
        for c in contracts:
            paid = self.book.paid_periods(c.contract_id)
            if c.supplier == me:
                earned += c.period_amount * len(paid)
            if c.customer == me:
                spent += c.period_amount * len(paid)
                debt += c.period_amount * len([k for k in c.started_periods(now) if k not in paid])
        return {
            "address": me,
            "offers": [o.to_dict(now) for o in self.book.offers.values() if o.supplier == me],
            "bids": [b.to_dict() for b in self.book.bids.values() if me in (b.customer, b.supplier)],
            "contracts": [dict(c.to_dict(self.book.paid_periods(c.contract_id), now),
                               payments_seen=self.book.payments_seen.get(c.contract_id, 0)) for c in contracts],
            "earned": float(earned), "spent": float(spent), "debt": float(debt),
        }

    def customer_state(self, customer: str) -> dict[str, Any]:
        """The state of `customer`'s contracts with us as supplier: the best of them (current or paid
        first, then overdue, then completed), or `none`."""
        me = self.chain.address
        now = self.clock()
        found = [(c.state(self.book.paid_periods(c.contract_id), now), c.contract_id)
                 for c in self.book.contracts.values() if c.supplier == me and c.customer == customer]
        for wanted in (("current", "paid"), ("overdue",), ("completed",)):
            for state, contract_id in found:
                if state in wanted:
                    return {"state": state, "contract_id": contract_id}
        return {"state": "none", "contract_id": None}

    # ---- paying ---------------------------------------------------------------------------------

    async def pay_due(self) -> list[tuple[str, int, str]]:
        """Pay every started, unpaid period of our contracts as customer: (contract, period, txid) sent."""
        me = self.chain.address
        sent = []
        now = self.clock()
        for contract in list(self.book.contracts.values()):
            if contract.customer != me:
                continue
            paid = self.book.paid_periods(contract.contract_id)
            for period in contract.started_periods(now):
                if period in paid:
                    continue
                txid = await self._pay(contract, period)
                if txid:
                    sent.append((contract.contract_id, period, txid))
        return sent

    async def _pay(self, contract: market.Contract, period: int) -> str | None:
        """Broadcast the one transaction of this period (made and recorded first if there is none)."""
        intent = self.store.intent(contract.contract_id, period)
        if intent is not None:
            txid, signed = intent
            if await self.chain.transaction_state(txid) is not None:
                return None  # in the pool or a block: the scan will see it
            return await self._broadcast(contract, period, txid, signed)
        data = market.encode({"contract_id": contract.contract_id, "period": period})
        try:
            txid, signed = await self.chain.build(contract.supplier, contract.period_amount,
                                                  Payload(market.PAYMENT_OPERATION, data))
        except ConflictError as err:
            if (contract.contract_id, period) not in self._unpayable:
                self._unpayable.add((contract.contract_id, period))
                log.warning("cannot pay period %d of %s yet: %s", period, contract.contract_id, err.message)
            return None
        if not self.store.add_intent(contract.contract_id, period, txid, signed):
            return None
        return await self._broadcast(contract, period, txid, signed)

    async def _broadcast(self, contract: market.Contract, period: int, txid: str, signed: str) -> str | None:
        try:
            await self.chain.broadcast(signed)
            return txid
        except EngineError as err:
            text = err.message.lower()
            if any(marker in text for marker in ALREADY_KNOWN):
                return None
            if any(marker in text for marker in DEAD):
                # Its inputs went to another transaction: this one can never pay. Pay with a new one.
                log.warning("payment %s of %s period %d is dead (%s): paying again", txid,
                            contract.contract_id, period, err.message)
                data = market.encode({"contract_id": contract.contract_id, "period": period})
                new_txid, new_signed = await self.chain.build(contract.supplier, contract.period_amount,
                                                              Payload(market.PAYMENT_OPERATION, data))
                self.store.replace_intent(contract.contract_id, period, txid, new_txid, new_signed)
                await self.chain.broadcast(new_signed)
                return new_txid
            raise


def not_found(kind: str) -> NotFoundError:
    return NotFoundError(f"no such {kind}", reason=f"{kind}_not_found")
