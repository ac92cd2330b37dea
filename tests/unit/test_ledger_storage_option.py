"""Storage that requires a paid contract: the supplier role (real module) with `contract_rules`, the ledger a
plain fake (the unit tier: which state the ledger reports is the input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.storage.contract_rules import ContractRules, NoContractError
from services.storage.supplier import SupplierRole

ALICE = "http://id.test/alice.xml"


class Ledger:
    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.asked = 0

    async def contract_state(self, customer_idurl: str) -> str:
        self.asked += 1
        return self.states.get(customer_idurl, "none")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _rules(ledger: Ledger, enabled: bool, clock: Clock | None = None, grace: float = 60) -> ContractRules:
    return ContractRules(ledger, lambda: enabled, lambda: grace, clock or Clock())


async def _hire(role: SupplierRole, creator: str) -> dict:
    doc = {"command": "RequestService", "owner_idurl": creator, "creator_idurl": creator, "packet_id": "req:1",
           "key_id": f"master${creator}", "date": "2024-01-01",
           "payload": {"service": "supplier", "needed_bytes": 1000, "ecc_map": "ecc/4x4", "position": 1}}
    return await role.on_inbox(doc)


@pytest.mark.parametrize(("state", "accepted"), [("current", True), ("paid", True), ("none", False),
                                                 ("overdue", False), ("completed", False)])
async def test_with_the_option_on_only_a_current_contract_hires_the_supplier(tmp_path: Path, state, accepted):
    ledger = Ledger()
    ledger.states[ALICE] = state
    role = SupplierRole(tmp_path / "supplier", lambda: 10_000, admit=_rules(ledger, True).admit)
    try:
        reply = await _hire(role, ALICE)
        if accepted:
            assert reply["command"] == "Ack" and [c["idurl"] for c in role.customers()] == [ALICE]
        else:
            assert reply["command"] == "Fail" and reply["payload"]["reason"] == "no_current_contract"
            assert role.customers() == []  # nothing allocated
    finally:
        role.close()


async def test_with_the_option_off_the_ledger_is_not_asked(tmp_path: Path):
    ledger = Ledger()
    role = SupplierRole(tmp_path / "supplier", lambda: 10_000, admit=_rules(ledger, False).admit)
    try:
        assert (await _hire(role, ALICE))["command"] == "Ack" and ledger.asked == 0
    finally:
        role.close()


async def test_an_overdue_customer_is_dropped_only_after_the_grace_period():
    ledger, clock = Ledger(), Clock()
    rules = _rules(ledger, True, clock, grace=60)
    ledger.states[ALICE] = "overdue"
    assert await rules.to_drop([ALICE]) == []
    clock.now += 59
    assert await rules.to_drop([ALICE]) == []
    ledger.states[ALICE] = "paid"  # paid meanwhile: the grace starts again next time
    assert await rules.to_drop([ALICE]) == []
    ledger.states[ALICE] = "overdue"
    clock.now += 1
    assert await rules.to_drop([ALICE]) == []
    clock.now += 60
    assert await rules.to_drop([ALICE]) == [ALICE]
    assert await _rules(ledger, False, clock, grace=0).to_drop([ALICE]) == []


async def test_admission_refusal_is_a_403_with_a_stable_reason():
    with pytest.raises(NoContractError) as err:
        await _rules(Ledger(), True).admit(ALICE)
    assert (err.value.status, err.value.reason) == (403, "no_current_contract")
