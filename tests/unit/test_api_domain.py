"""Pure parts of the api process: service states and the event hub."""

from __future__ import annotations

import asyncio

from common.automat import Automat, AutomatRegistry
from common.services_catalog import BY_NAME, CATALOG, dependents
from services.api.events import EventHub
from services.api.services_state import DEPENDS_OFF, OFF, ON, STARTING, compute_states

ALL = {"identity", "dht", "transport", "storage", "messaging", "api"}


def test_states_follow_options_processes_and_dependencies():
    states = compute_states(lambda s: s.enabled, ALL, set())
    assert states["service_supplier"] == ON
    assert states["service_identity_server"] == OFF
    assert states["service_bismuth_node"] == STARTING  # the ledger process is not up
    # The ledger reports its engine's state: absent or down is OFF, whatever the option says.
    engine_off = {"service_bismuth_node": OFF, "service_bismuth_wallet": OFF, "service_bismuth_blockchain": OFF}
    with_ledger = compute_states(lambda s: s.enabled, ALL | {"ledger"}, set(), engine_off)
    assert with_ledger["service_bismuth_node"] == OFF and with_ledger["service_bismuth_wallet"] == OFF
    engine_on = {name: ON for name in engine_off}
    assert compute_states(lambda s: s.enabled, ALL | {"ledger"}, set(), engine_on)["service_bismuth_wallet"] == ON
    off = compute_states(lambda s: s.enabled and s.name != "service_keys_registry", ALL, set())
    assert off["service_keys_registry"] == OFF and off["service_supplier"] == DEPENDS_OFF
    restarting = compute_states(lambda s: s.enabled, ALL, {"dht"})
    assert restarting["service_entangled_dht"] == STARTING
    assert restarting["service_private_messages"] == DEPENDS_OFF
    down = compute_states(lambda s: s.enabled, ALL - {"storage"}, set())
    assert down["service_customer"] == STARTING


def test_messaging_services_report_what_is_built():
    states = compute_states(lambda s: True, ALL, set())
    assert states["service_private_messages"] == ON and states["service_message_history"] == ON
    # Groups and brokers are built: ON when their options are.
    assert states["service_private_groups"] == ON and states["service_message_broker"] == ON
    assert states["service_joint_postman"] == ON


def test_catalog_is_consistent():
    for service in CATALOG:
        assert all(dep in BY_NAME for dep in service.depends), service.name
    assert "service_supplier" in dependents("service_keys_registry")
    assert BY_NAME["service_private_groups"].config_path == "services/private-groups/enabled"


async def test_event_hub_long_poll_and_buffers():
    hub = EventHub()
    first = asyncio.ensure_future(hub.poll("c1", timeout=5))
    await asyncio.sleep(0)
    hub.feed({"event_id": "a", "data": 1})
    assert [e["event_id"] for e in await first] == ["a"]
    for n in range(150):
        hub.feed({"event_id": "b", "data": n})
    events = await hub.poll("c1", timeout=0.01)
    assert len(events) == 100 and events[-1]["data"] == 149
    assert hub.counts["b"] == 150
    assert await hub.poll("c1", timeout=0.01) == []


def test_automat_transitions_and_observers():
    class Door(Automat):
        initial = "CLOSED"
        transitions = {("CLOSED", "open"): "OPEN", ("OPEN", "close"): "CLOSED"}

    registry = AutomatRegistry()
    seen = []
    registry.observe(lambda m, old, new, event: seen.append((old, new, event)))
    door = Door("door", registry)
    door.events_enabled = True
    assert door.fire("close") == "CLOSED"
    assert door.fire("open") == "OPEN"
    assert seen == [("CLOSED", "OPEN", "open")]
    assert registry.get("door") is door and door.info()["repr"] == "door(OPEN)"
    door.close()
    assert registry.all() == []
