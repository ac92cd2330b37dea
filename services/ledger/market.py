"""The storage market: offers, bids, contracts and their payments, as rules over on-chain records.

Pure: no engine, no bus, no clock (the time comes in). Every record is a transaction whose first
input is signed by its author's wallet key, so the engine has already proved who wrote it: the
`sender` address below is never a claim. What this module adds is the market's own rules, checked
by every node on every record it sees, in the order it sees them:

    offer   (supplier)  space_gb, price per GB-hour, duration_hours, expires
    bid     (customer)  offer_id, space_gb <= offer's, duration_hours <= offer's, periods
                        valid only while the offer has not expired
    accept  (supplier)  bid_id; valid only from the offer's supplier, once per bid: the contract
    storage (customer)  pays the supplier one period of a contract: data {"contract_id", "period"}

A contract is paid per period, each at its start; its state at a moment:

    completed  every period paid and the contract's end has passed
    overdue    a period started more than `GRACE_SECONDS` ago and is not paid
    current    a started period is unpaid, still within its grace
    paid       every period started so far is paid
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from common.errors import ConflictError, InvalidArgumentError, NotFoundError
from services.ledger.amounts import QUANTUM, parse_amount
from services.ledger.errors import ForbiddenError

GRACE_SECONDS = 30.0
"""How long after a period starts its payment may still be on its way before the contract is overdue."""
MAX_SPACE_GB = Decimal(1_000_000)
MAX_HOURS = Decimal(24 * 365 * 10)
MAX_PERIODS = 10_000
RECORD_OPERATIONS = ("offer", "bid", "accept")
PAYMENT_OPERATION = "storage"


@dataclass(frozen=True)
class Offer:
    offer_id: str
    supplier: str
    space_gb: Decimal
    price: Decimal
    duration_hours: Decimal
    expires: float
    created: float

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"offer_id": self.offer_id, "supplier": self.supplier, "space_gb": float(self.space_gb),
                "price": float(self.price), "duration_hours": float(self.duration_hours),
                "expires": self.expires, "created": self.created, "expired": now >= self.expires}


@dataclass(frozen=True)
class Bid:
    bid_id: str
    offer_id: str
    customer: str
    supplier: str
    space_gb: Decimal
    duration_hours: Decimal
    periods: int
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {"bid_id": self.bid_id, "offer_id": self.offer_id, "customer": self.customer,
                "supplier": self.supplier, "space_gb": float(self.space_gb),
                "duration_hours": float(self.duration_hours), "periods": self.periods, "created": self.created}


@dataclass(frozen=True)
class Contract:
    """A bid accepted: the reference's contract fields plus ours."""

    contract_id: str
    bid_id: str
    offer_id: str
    customer: str
    supplier: str
    started: float
    duration_hours: Decimal
    allocated_bytes: int
    price: Decimal
    periods: int
    space_gb: Decimal

    @property
    def complete_after(self) -> float:
        return self.started + float(self.duration_hours) * 3600

    @property
    def period_seconds(self) -> float:
        return float(self.duration_hours) * 3600 / self.periods

    @property
    def value(self) -> Decimal:
        """GB-hours bought."""
        return self.space_gb * self.duration_hours

    @property
    def period_amount(self) -> Decimal:
        """What each period costs: the whole price split evenly, rounded down to the coin's smallest unit."""
        return (self.value * self.price / self.periods).quantize(QUANTUM, rounding=ROUND_DOWN)

    def period_start(self, period: int) -> float:
        return self.started + period * self.period_seconds

    def started_periods(self, now: float) -> list[int]:
        """Periods that have begun by `now` (the first one as the contract begins)."""
        if now < self.started:
            return []
        return list(range(min(self.periods, int((now - self.started) // self.period_seconds) + 1)))

    def state(self, paid: set[int], now: float) -> str:
        unpaid = [k for k in self.started_periods(now) if k not in paid]
        if not unpaid:
            return "completed" if now >= self.complete_after and len(paid) >= self.periods else "paid"
        if any(now - self.period_start(k) > GRACE_SECONDS for k in unpaid):
            return "overdue"
        return "current"

    def to_dict(self, paid: set[int], now: float) -> dict[str, Any]:
        return {
            "contract_id": self.contract_id, "bid_id": self.bid_id, "offer_id": self.offer_id,
            "customer": self.customer, "supplier": self.supplier, "wallet_address": self.supplier,
            "started": self.started, "complete_after": self.complete_after,
            "pay_before": self.period_start(min(len(paid), self.periods - 1)) + GRACE_SECONDS,
            "value": float(self.value), "allocated_bytes": self.allocated_bytes,
            "duration_hours": float(self.duration_hours), "price": float(self.price), "periods": self.periods,
            "period_amount": float(self.period_amount), "paid_periods": sorted(paid),
            # Reference fields about erasure coding and renewals: a contract here covers one supplier's space.
            "ecc_position": None, "ecc_map": None, "raise_factor": 1.0, "sequence_number": 0,
            "state": self.state(paid, now),
        }


def _number(value: Any, name: str, limit: Decimal) -> Decimal:
    amount = parse_amount(value, name)
    if amount > limit:
        raise InvalidArgumentError(f"{name} is more than {limit}", reason="invalid_amount")
    return amount


def offer_terms(space_gb: Any, price: Any, duration_hours: Any, expires_hours: Any) -> dict[str, str]:
    """The data of an offer record; raises `InvalidArgumentError`."""
    return {"space_gb": str(_number(space_gb, "space_gb", MAX_SPACE_GB)),
            "price": str(_number(price, "price", Decimal(1_000_000))),
            "duration_hours": str(_number(duration_hours, "duration_hours", MAX_HOURS)),
            "expires_hours": str(_number(expires_hours, "expires_hours", MAX_HOURS))}


def bid_terms(offer: Offer | None, space_gb: Any, duration_hours: Any, periods: Any, now: float) -> dict[str, Any]:
    """The data of a bid record on `offer`; raises 404 / 409 / 400 as the contract of `billing_bid_create`."""
    if offer is None:
        raise NotFoundError("no such offer", reason="offer_not_found")
    if now >= offer.expires:
        raise ConflictError(f"offer {offer.offer_id} has expired", reason="offer_expired")
    space = _number(space_gb, "space_gb", offer.space_gb)
    hours = _number(duration_hours, "duration_hours", offer.duration_hours)
    if isinstance(periods, bool) or not isinstance(periods, int) or not 0 <= periods <= MAX_PERIODS:
        raise InvalidArgumentError(f"periods must be 0 (one per hour) to {MAX_PERIODS}", reason="invalid_argument")
    count = periods or max(1, math.ceil(hours))
    return {"offer_id": offer.offer_id, "space_gb": str(space), "duration_hours": str(hours), "periods": count}


def encode(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def parse_offer(txid: str, sender: str, text: str, seen: float) -> Offer | None:
    """An offer record, or None when its data does not make one."""
    try:
        data = json.loads(text)
        terms = offer_terms(data["space_gb"], data["price"], data["duration_hours"], data["expires_hours"])
    except (ValueError, TypeError, KeyError, InvalidArgumentError):
        return None
    return Offer(txid, sender, Decimal(terms["space_gb"]), Decimal(terms["price"]), Decimal(terms["duration_hours"]),
                 seen + float(terms["expires_hours"]) * 3600, seen)


def parse_bid(txid: str, sender: str, text: str, offers: dict[str, Offer], seen: float) -> Bid | None:
    """A bid record valid against the offers known at `seen`, or None."""
    try:
        data = json.loads(text)
        terms = bid_terms(offers.get(str(data["offer_id"])), data["space_gb"], data["duration_hours"],
                          data["periods"], seen)
    except (ValueError, TypeError, KeyError, InvalidArgumentError, NotFoundError, ConflictError):
        return None
    offer = offers[terms["offer_id"]]
    return Bid(txid, offer.offer_id, sender, offer.supplier, Decimal(terms["space_gb"]),
               Decimal(terms["duration_hours"]), int(terms["periods"]), seen)


def check_accept(bid: Bid | None, acceptor: str, contracts: dict[str, Contract]) -> Bid:
    """The bid an accept by `acceptor` may turn into a contract; raises 404 / 403 / 409."""
    if bid is None:
        raise NotFoundError("no such bid", reason="bid_not_found")
    if acceptor != bid.supplier:
        raise ForbiddenError("only the supplier of the offer may accept a bid on it", reason="not_offer_supplier")
    if any(c.bid_id == bid.bid_id for c in contracts.values()):
        raise ConflictError(f"bid {bid.bid_id} is accepted already", reason="bid_already_accepted")
    return bid


def parse_accept(txid: str, sender: str, text: str, bids: dict[str, Bid], offers: dict[str, Offer],
                 contracts: dict[str, Contract], seen: float) -> Contract | None:
    """The contract an accept record makes, or None when it is not a valid accept."""
    try:
        data = json.loads(text)
        bid = check_accept(bids.get(str(data["bid_id"])), sender, contracts)
        started = float(data["started"])
    except (ValueError, TypeError, KeyError, InvalidArgumentError, NotFoundError, ConflictError, ForbiddenError):
        return None
    if not math.isfinite(started) or abs(started - seen) > 3600:
        return None  # a start far from when the accept appeared is not one this node agrees to
    offer = offers[bid.offer_id]
    return Contract(txid, bid.bid_id, bid.offer_id, bid.customer, bid.supplier, started, bid.duration_hours,
                    int(bid.space_gb * 1024**3), offer.price, bid.periods, bid.space_gb)


def payment_of(contract: Contract | None, sender: str, recipient: str, amount: Decimal, text: str) -> int | None:
    """The period a `storage` payment settles, or None when it settles nothing."""
    if contract is None:
        return None
    try:
        data = json.loads(text)
        period = int(data["period"])
    except (ValueError, TypeError, KeyError):
        return None
    if sender != contract.customer or recipient != contract.supplier or not 0 <= period < contract.periods:
        return None
    return period if amount >= contract.period_amount else None


def to_row(item: Offer | Bid | Contract) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in asdict(item).items()}
