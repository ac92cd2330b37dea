"""Every market record this node has seen, applied in the order seen: offers, bids, contracts, payments.

Pure and in memory; `store.LedgerStore` keeps the raw records and `replay` rebuilds the same book
after a restart, since applying the same records in the same order gives the same result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from services.ledger import market
from services.ledger.market import Bid, Contract, Offer


@dataclass(frozen=True)
class Record:
    """One on-chain transaction that carries a market operation."""

    txid: str
    operation: str
    sender: str
    recipient: str
    amount: Decimal
    data: str
    seen: float


class Book:
    """Offers, bids and contracts by id, and the periods paid of each contract (with their transactions)."""

    def __init__(self) -> None:
        self.offers: dict[str, Offer] = {}
        self.bids: dict[str, Bid] = {}
        self.contracts: dict[str, Contract] = {}
        self.paid: dict[str, dict[int, str]] = {}
        self.payments_seen: dict[str, int] = {}
        """Every valid payment seen per contract, a second one for a period included (it would be a double payment)."""
        self.known: set[str] = set()

    def apply(self, record: Record) -> str | None:
        """Apply one record; what it made (`offer`, `bid`, `contract`, `payment`) or None if invalid."""
        if record.txid in self.known:
            return None
        self.known.add(record.txid)
        if record.operation == "offer":
            offer = market.parse_offer(record.txid, record.sender, record.data, record.seen)
            if offer is not None:
                self.offers[offer.offer_id] = offer
                return "offer"
        elif record.operation == "bid":
            bid = market.parse_bid(record.txid, record.sender, record.data, self.offers, record.seen)
            if bid is not None:
                self.bids[bid.bid_id] = bid
                return "bid"
        elif record.operation == "accept":
            contract = market.parse_accept(record.txid, record.sender, record.data, self.bids, self.offers,
                                           self.contracts, record.seen)
            if contract is not None:
                self.contracts[contract.contract_id] = contract
                return "contract"
        elif record.operation == market.PAYMENT_OPERATION:
            contract_id = _contract_id(record.data)
            contract = self.contracts.get(contract_id)
            period = market.payment_of(contract, record.sender, record.recipient, record.amount, record.data)
            if period is not None:
                self.payments_seen[contract_id] = self.payments_seen.get(contract_id, 0) + 1
            if period is not None and period not in self.paid.get(contract_id, {}):
                self.paid.setdefault(contract_id, {})[period] = record.txid
                return "payment"
        return None

    def paid_periods(self, contract_id: str) -> set[int]:
        return set(self.paid.get(contract_id, {}))


def _contract_id(text: str) -> str:
    try:
        data = json.loads(text)
        return str(data["contract_id"]) if isinstance(data, dict) else ""
    except (ValueError, KeyError):
        return ""
