"""The identity process pins the peers the storage and messaging processes name (contracts,
friends) on a real bus, and a group that ends unpins its peers; a process that does not answer
leaves its group as it was."""

from __future__ import annotations

from typing import Any

from common.endpoint import endpoint
from common.process import ServiceBase
from services.identity import peer_pins
from services.identity.service import IdentityService
from tests.helpers import running_service
from tests.service.test_identity_support import configure

SUPPLIER = "http://127.0.0.1:8084/sam.xml"
CUSTOMER = "http://127.0.0.1:8084/cleo.xml"
FRIEND = "http://127.0.0.1:9000/fred.xml"


class FakeStorage(ServiceBase):
    suppliers: list[str] = [SUPPLIER, ""]

    @endpoint("suppliers_idurls", internal=True)
    async def suppliers_idurls(self) -> dict[str, Any]:
        return {"idurls": self.suppliers, "desired": 2}

    @endpoint("customers_idurls", internal=True)
    async def customers_idurls(self) -> dict[str, Any]:
        return {"idurls": [CUSTOMER, "not an idurl"]}


class FakeMessaging(ServiceBase):
    @endpoint()
    async def friends_list(self) -> list[dict[str, Any]]:
        return [{"idurl": FRIEND, "global_id": "fred@127.0.0.1_9000"}]


async def test_contracts_and_friends_are_pinned(bus_home):
    configure(bus_home)
    async with running_service(bus_home, "identity", IdentityService) as service:
        assert isinstance(service, IdentityService)
        async with running_service(bus_home, "storage", FakeStorage):
            async with running_service(bus_home, "messaging", FakeMessaging):
                counts = await peer_pins.refresh(service.cache, service.ctx.bus)
            assert counts == {"suppliers": 1, "customers": 1, "friends": 1}
            assert all(service.cache.pinned(i) for i in (SUPPLIER, CUSTOMER, FRIEND))
            # Messaging is down now: its group stays; the supplier's contract ended: unpinned.
            FakeStorage.suppliers = []
            counts = await peer_pins.refresh(service.cache, service.ctx.bus)
            assert counts == {"suppliers": 0, "customers": 1}
            assert not service.cache.pinned(SUPPLIER)
            assert service.cache.pinned(CUSTOMER) and service.cache.pinned(FRIEND)
        stats = await service.cache_stats()
        assert stats["pinned"] == 2
    # The pins outlive a restart.
    async with running_service(bus_home, "identity", IdentityService) as service:
        assert isinstance(service, IdentityService)
        assert service.cache.pinned(FRIEND) and service.cache.pinned(CUSTOMER)
