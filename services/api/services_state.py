"""States of the logical services, derived from options, process health and dependencies."""

from __future__ import annotations

from typing import Any, Callable

from common.services_catalog import CATALOG, BY_NAME, LogicalService

ON, OFF, STARTING, STOPPING, DEPENDS_OFF = "ON", "OFF", "STARTING", "STOPPING", "DEPENDS_OFF"

# Processes that are part of the suite.
SUITE = {"identity", "dht", "transport", "storage", "messaging", "ledger", "api"}


def compute_states(enabled: Callable[[LogicalService], bool], alive: set[str], restarting: set[str],
                   reported: dict[str, str] | None = None) -> dict[str, str]:
    """The state of every logical service.

    OFF when switched off (or not installed, or not built yet), STARTING while its process restarts or is not up yet,
    DEPENDS_OFF when a dependency is not ON, else ON. `reported` holds what a process checked itself (the
    ledger: is its engine installed and answering?); a service it reports as not ON takes that state.
    """
    reported = reported or {}
    states: dict[str, str] = {}

    def state_of(service: LogicalService, trail: tuple[str, ...] = ()) -> str:
        if service.name in states:
            return states[service.name]
        if service.process not in SUITE or not service.built or not enabled(service):
            result = OFF
        elif service.process in restarting or service.process not in alive:
            result = STARTING
        elif reported.get(service.name, ON) != ON:
            result = reported[service.name]
        else:
            result = ON
            for dep in service.depends:
                dep_service = BY_NAME.get(dep)
                if dep_service is None or dep in trail:
                    continue
                if state_of(dep_service, trail + (service.name,)) != ON:
                    result = DEPENDS_OFF
                    break
        states[service.name] = result
        return result

    for service in CATALOG:
        state_of(service)
    return states


def describe(service: LogicalService, state: str, enabled: bool, index: int) -> dict[str, Any]:
    """A `services_list` item, with the reference engine's fields and the hosting process."""
    return {
        "id": service.name,
        "name": service.name,
        "index": index,
        "state": state,
        "enabled": enabled,
        "installed": service.process in SUITE,
        "depends": list(service.depends),
        "config_path": service.config_path,
        "process": service.process,
    }
