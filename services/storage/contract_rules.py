"""Storage that requires a paid contract (option `services/supplier/require-contract`, off by default).

With the option on, a supplier
- accepts (`RequestService`) only a customer whose storage contract with it, on the ledger, is
  `current` or `paid` (refused otherwise: 403 `no_current_contract`, or 503 when the ledger cannot say);
- drops the data of a customer whose contract has stayed `overdue` for `services/supplier/overdue-grace`
  seconds (the ledger's `overdue` already allows each period's payment 30 s past its start).
A customer the ledger reports `completed` or without contract is left alone once accepted: the
option gates admission and punishes debt, it does not end finished contracts.

No bus here: the ledger is a `Protocol` (`contract_state(idurl) -> state`), the clock comes in.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from common.errors import NodeError

ADMITTED = ("current", "paid")
OVERDUE = "overdue"


class Ledger(Protocol):
    async def contract_state(self, customer_idurl: str) -> str: ...


class NoContractError(NodeError):
    status = 403
    reason = "no_current_contract"


class ContractRules:
    """Who may store here, and whose data goes, by the state of their contract on the ledger."""

    def __init__(self, ledger: Ledger, enabled: Callable[[], bool], grace: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic):
        self.ledger = ledger
        self.enabled = enabled
        self.grace = grace
        self.clock = clock
        self.overdue_since: dict[str, float] = {}

    async def admit(self, customer_idurl: str) -> None:
        """Raises `NoContractError` unless the option is off or the customer's contract is current or paid."""
        if not self.enabled():
            return
        state = await self.ledger.contract_state(customer_idurl)
        if state not in ADMITTED:
            raise NoContractError(f"{customer_idurl} has no current storage contract with this supplier ({state})")

    async def to_drop(self, customers: list[str]) -> list[str]:
        """The customers whose contract has been overdue for longer than the grace period."""
        if not self.enabled():
            self.overdue_since.clear()
            return []
        now, due = self.clock(), []
        for idurl in customers:
            state = await self.ledger.contract_state(idurl)
            if state != OVERDUE:
                self.overdue_since.pop(idurl, None)
                continue
            since = self.overdue_since.setdefault(idurl, now)
            if now - since >= self.grace():
                due.append(idurl)
        for gone in set(self.overdue_since) - set(customers):
            del self.overdue_since[gone]
        return due
