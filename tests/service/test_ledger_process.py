"""The ledger process on the real bus, where the engine is not installed: OFF with the reason, 503, no fake."""

from __future__ import annotations

from typing import Any

import pytest

from common import subjects
from common.errors import NodeError
from common.home import NodeHome
from services.ledger.service import LedgerService
from tests.helpers import connect, running_service

METHODS: dict[str, dict[str, Any]] = {
    "blockchain_info": {}, "blockchain_wallet_balance": {}, "blockchain_block_produce": {},
    "blockchain_transaction_send": {"recipient": "mm5Yiba1U2odgUskxnXMJGQMV1DSAXVPib", "amount": 1},
    "billing_info": {}, "billing_offers_list": {},
    "billing_offer_create": {"space_gb": 1, "price": 1, "duration_hours": 1},
    "billing_bid_create": {"offer_id": "a" * 64, "space_gb": 1, "duration_hours": 1},
    "billing_bid_accept": {"bid_id": "b" * 64},
}


async def test_without_the_engine_every_method_answers_503_and_the_services_say_why(
        bus_home: NodeHome, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # litecoind is nowhere to be found
    async with running_service(bus_home, "ledger", LedgerService):
        client = await connect(bus_home)
        try:
            for method, kwargs in METHODS.items():
                with pytest.raises(NodeError) as err:
                    await client.call(subjects.api("ledger", method), kwargs)
                assert (err.value.status, err.value.reason) == (503, "ledger_engine_absent"), method
                assert "not installed" in err.value.message
            states = await client.call_internal("ledger", "service_states")
            assert set(states["states"].values()) == {"OFF"} and "litecoind is not installed" in states["reason"]
        finally:
            await client.close()
