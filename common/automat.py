"""Explicit state machines and the per-process registry behind `automats_list`.

A machine declares its transition table in one place:

    class Door(Automat):
        initial = "CLOSED"
        transitions = {("CLOSED", "open"): "OPEN", ("OPEN", "close"): "CLOSED"}

`fire(event)` moves it; an event with no transition from the current state is ignored (and
remembered in `past` like the reference engine's automats). Observers registered on the
registry see every state change, which is how processes publish `state-changed` events.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any, Callable, ClassVar

StateObserver = Callable[["Automat", str, str, str], None]


class Automat:
    """A named state machine with a declarative transition table."""

    initial: ClassVar[str] = "AT_STARTUP"
    transitions: ClassVar[dict[tuple[str, str], str]] = {}

    def __init__(self, automat_id: str, registry: "AutomatRegistry | None" = None, name: str | None = None):
        self.id = automat_id
        self.name = name or type(self).__name__
        self.state = self.initial
        self.past: deque[str] = deque([self.initial], maxlen=10)
        self.events_enabled = False
        self.state_unchanged_events = False
        self.index = 0
        self.created = time.time()
        self._registry = registry
        if registry is not None:
            registry.add(self)

    def fire(self, event: str) -> str:
        """Apply `event`; return the (possibly unchanged) state."""
        old = self.state
        new = self.transitions.get((old, event))
        if new is None:
            new = self.transitions.get(("*", event), old)
        if new != old:
            self.state = new
            self.past.append(new)
            self.on_enter(new, event)
        if self._registry is not None:
            self._registry.notify(self, old, new, event)
        return self.state

    def set_state(self, state: str, event: str = "set") -> None:
        """Force a state, for machines whose state mirrors an outside fact."""
        old = self.state
        if state != old:
            self.state = state
            self.past.append(state)
        if self._registry is not None:
            self._registry.notify(self, old, state, event)

    def on_enter(self, state: str, event: str) -> None:
        """Hook for subclasses: called after a transition into `state`."""

    def close(self) -> None:
        """Drop the machine from its registry."""
        if self._registry is not None:
            self._registry.remove(self)
            self._registry = None

    def info(self) -> dict[str, Any]:
        """The reference engine's automat description."""
        return {
            "id": self.id,
            "index": self.index,
            "name": self.name,
            "state": self.state,
            "past": list(self.past),
            "repr": f"{self.id}({self.state})",
            "events": self.events_enabled,
            "timers": "",
        }


class AutomatRegistry:
    """Every live machine of one process, indexed as the API sees them."""

    def __init__(self) -> None:
        self._machines: dict[str, Automat] = {}
        self._counter = itertools.count(1)
        self._observers: list[StateObserver] = []

    def add(self, machine: Automat) -> None:
        machine.index = next(self._counter)
        self._machines[machine.id] = machine

    def remove(self, machine: Automat) -> None:
        self._machines.pop(machine.id, None)

    def get(self, automat_id: str) -> Automat | None:
        return self._machines.get(automat_id)

    def by_index(self, index: int) -> Automat | None:
        return next((m for m in self._machines.values() if m.index == index), None)

    def all(self) -> list[Automat]:
        return sorted(self._machines.values(), key=lambda m: m.index)

    def observe(self, observer: StateObserver) -> None:
        self._observers.append(observer)

    def notify(self, machine: Automat, old: str, new: str, event: str) -> None:
        if not machine.events_enabled:
            return
        if old == new and not machine.state_unchanged_events:
            return
        for observer in self._observers:
            observer(machine, old, new, event)
