"""The storage market's rules: offers, bids, contracts and payments applied as every node applies them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.errors import ConflictError, InvalidArgumentError, NotFoundError
from services.ledger import market
from services.ledger.book import Book, Record
from services.ledger.errors import ForbiddenError

SUPPLIER, CUSTOMER, STRANGER = "m" + "s" * 33, "m" + "c" * 33, "m" + "x" * 33
T0 = 1_800_000_000.0


def _rec(txid: str, operation: str, sender: str, data: dict, seen: float, recipient: str = "",
         amount: str = "0") -> Record:
    return Record(txid, operation, sender, recipient, Decimal(amount), market.encode(data), seen)


def _offer(seen: float = T0, expires_hours: str = "1") -> Record:
    return _rec("o1", "offer", SUPPLIER, {"space_gb": "2", "price": "10", "duration_hours": "4",
                                          "expires_hours": expires_hours}, seen)


def _bid(seen: float = T0 + 10, sender: str = CUSTOMER, space: str = "2") -> Record:
    return _rec("b1", "bid", sender, {"offer_id": "o1", "space_gb": space, "duration_hours": "4", "periods": 4}, seen)


def _accept(txid: str = "k1", sender: str = SUPPLIER, seen: float = T0 + 20) -> Record:
    return _rec(txid, "accept", sender, {"bid_id": "b1", "started": T0 + 20}, seen)


def _pay(txid: str, period: int, sender: str = CUSTOMER, amount: str = "20", recipient: str = SUPPLIER) -> Record:
    return _rec(txid, "storage", sender, {"contract_id": "k1", "period": period}, T0 + 30, recipient, amount)


def _book(*records: Record) -> Book:
    book = Book()
    for record in records:
        book.apply(record)
    return book


def test_offer_bid_accept_make_a_contract_with_the_reference_fields():
    book = _book(_offer(), _bid(), _accept())
    contract = book.contracts["k1"]
    assert (contract.customer, contract.supplier, contract.periods) == (CUSTOMER, SUPPLIER, 4)
    assert contract.period_amount == Decimal(20)  # 2 GB * 4 h * 10 per GB-hour / 4 periods
    shown = contract.to_dict(set(), T0 + 21)
    for field in ("started", "complete_after", "pay_before", "value", "allocated_bytes", "duration_hours",
                  "ecc_position", "ecc_map", "raise_factor", "sequence_number", "wallet_address", "contract_id",
                  "customer", "supplier", "state"):
        assert field in shown
    assert shown["value"] == 8.0 and shown["allocated_bytes"] == 2 * 1024**3 and shown["wallet_address"] == SUPPLIER


def test_contract_states_follow_time_and_payments():
    contract = _book(_offer(), _bid(), _accept()).contracts["k1"]
    start, period = contract.started, contract.period_seconds
    assert contract.started_periods(start - 1) == [] and contract.started_periods(start) == [0]
    assert contract.state(set(), start + 1) == "current"
    assert contract.state(set(), start + market.GRACE_SECONDS + 1) == "overdue"
    assert contract.state({0}, start + 1) == "paid"
    assert contract.state({0}, start + period + 1) == "current"
    assert contract.state({0, 1, 2, 3}, start + 4 * period) == "completed"
    assert contract.state({0, 1, 2}, start + 4 * period) == "overdue"


def test_only_the_offers_supplier_accepts_and_only_once():
    assert "k1" not in _book(_offer(), _bid(), _accept(sender=STRANGER)).contracts
    book = _book(_offer(), _bid(), _accept(), _accept(txid="k2"))
    assert set(book.contracts) == {"k1"}
    with pytest.raises(ForbiddenError):
        market.check_accept(book.bids["b1"], STRANGER, {})
    with pytest.raises(ConflictError):
        market.check_accept(book.bids["b1"], SUPPLIER, book.contracts)
    with pytest.raises(NotFoundError):
        market.check_accept(None, SUPPLIER, {})


def test_bids_on_expired_or_unknown_offers_or_beyond_them_are_void():
    assert "b1" not in _book(_offer(expires_hours="0.001"), _bid(seen=T0 + 10)).bids
    assert "b1" not in _book(_bid()).bids
    assert "b1" not in _book(_offer(), _bid(space="3")).bids
    with pytest.raises(ConflictError):
        market.bid_terms(_book(_offer()).offers["o1"], 1, 1, 0, T0 + 3601)


def test_payments_count_only_from_the_customer_to_the_supplier_in_full():
    base = (_offer(), _bid(), _accept())
    assert _book(*base, _pay("p1", 0, sender=STRANGER)).paid_periods("k1") == set()
    assert _book(*base, _pay("p1", 0, recipient=STRANGER)).paid_periods("k1") == set()
    assert _book(*base, _pay("p1", 0, amount="19.99999999")).paid_periods("k1") == set()
    assert _book(*base, _pay("p1", 4)).paid_periods("k1") == set()
    book = _book(*base, _pay("p1", 0), _pay("p2", 0), _pay("p1", 0))
    assert book.paid_periods("k1") == {0} and book.payments_seen["k1"] == 2  # a double payment shows


@pytest.mark.parametrize(("args", "reason"), [
    ((0, 1, 1, 1), "invalid_amount"), ((1, "-1", 1, 1), "invalid_amount"), ((1, 1, "nan", 1), "invalid_amount"),
    ((1, 1, 1, "1e-9"), "invalid_amount"), ((10**7, 1, 1, 1), "invalid_amount"),
])
def test_offer_terms_refuse_bad_numbers(args, reason):
    with pytest.raises(InvalidArgumentError) as err:
        market.offer_terms(*args)
    assert err.value.reason == reason


def test_malformed_records_are_ignored():
    assert _book(Record("o1", "offer", SUPPLIER, "", Decimal(0), "not json", T0)).offers == {}
    assert _book(Record("o1", "offer", SUPPLIER, "", Decimal(0), "[1]", T0)).offers == {}
    book = _book(_offer(), _bid(), Record("k1", "accept", SUPPLIER, "", Decimal(0), '{"bid_id": "b1"}', T0 + 20))
    assert book.contracts == {}


def test_a_customers_contract_state_as_storage_asks_it(tmp_path):
    from services.ledger.billing import Billing
    from services.ledger.chain import Chain
    from services.ledger.store import LedgerStore

    store = LedgerStore(tmp_path / "ledger.sqlite")
    store.add_records([_offer(), _bid(), _accept()])
    clock = [T0 + 21]
    chain = Chain(engine=None)  # type: ignore[arg-type]  # customer_state reads the book only
    chain.address = SUPPLIER
    billing = Billing(chain, store, clock=lambda: clock[0])
    assert billing.customer_state(CUSTOMER)["state"] == "current"
    assert billing.customer_state(STRANGER) == {"state": "none", "contract_id": None}
    clock[0] += market.GRACE_SECONDS + 1
    assert billing.customer_state(CUSTOMER)["state"] == "overdue"
    billing.book.apply(_pay("p1", 0))
    assert billing.customer_state(CUSTOMER) == {"state": "paid", "contract_id": "k1"}
    chain.address = STRANGER  # the same contract seen by a node that is not its supplier
    assert billing.customer_state(CUSTOMER)["state"] == "none"
    store.close()
