"""Running one node process: bus connection, endpoints, config updates, graceful stop.

`services/<name>/__main__.py` calls `run(name, factory)`; the factory builds the process's
service object (a `ServiceBase`) from a `ProcessContext`.

Each process runs on uvloop where it is installed (it is a dependency): every hop of a bus call
is event-loop work, and uvloop's loop in C takes about 0.14 ms off an API call that crosses the
bus (docs/decisions.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from common import codec, logs, subjects
from common.automat import Automat, AutomatRegistry
from common.bus import Bus, serve
from common.config_store import ConfigStore
from common.endpoint import endpoint
from common.errors import NotFoundError
from common.home import NodeHome, resolve_home
from common.metrics import ProcessMetrics

log = logging.getLogger(__name__)


@dataclass
class ProcessContext:
    """What every service object of a process is given."""

    name: str
    home: NodeHome
    bus: Bus
    config: ConfigStore
    automats: AutomatRegistry = field(default_factory=AutomatRegistry)
    started: float = field(default_factory=time.time)
    metrics: ProcessMetrics = field(default_factory=lambda: ProcessMetrics(""))
    """This process's figures for `GET /metrics`; services `register` their own hooks on it."""


class ServiceBase:
    """Endpoints every process serves, and the life-cycle hooks a process overrides."""

    def __init__(self, ctx: ProcessContext):
        self.ctx = ctx

    async def start(self) -> None:
        """Restore state and start background work (before endpoints are served)."""

    async def stop(self) -> None:
        """Drain: finish or persist what is under way."""

    async def on_config_changed(self, keys: list[str]) -> None:
        """React to options changed through `config_set` or `service_start/stop`."""

    def model_snapshot(self, model_name: str, query_details: Any = None) -> list[tuple[str, Any]] | None:
        """(id, data) of every item of a model this process owns, or None if it owns none."""
        return None

    @endpoint("ping", internal=True)
    async def ping(self) -> dict[str, Any]:
        return {"process": self.ctx.name, "pid": os.getpid(), "started": self.ctx.started}

    @endpoint("metrics", internal=True)
    async def metrics(self) -> dict[str, Any]:
        """Memory, CPU, loop lag, bus traffic and the service's own samples (`common.metrics`)."""
        return self.ctx.metrics.snapshot()

    @endpoint("automats", internal=True)
    async def automats(self) -> list[dict[str, Any]]:
        return [dict(m.info(), process=self.ctx.name) for m in self.ctx.automats.all()]

    @endpoint("automat_events", internal=True)
    async def automat_events(self, automat_id: str, enable: bool, state_unchanged: bool = False) -> dict[str, Any]:
        machine = self.ctx.automats.get(automat_id)
        if machine is None:
            raise NotFoundError(f"state machine {automat_id} was not found", reason="automat_not_found")
        machine.events_enabled = enable
        machine.state_unchanged_events = state_unchanged
        return dict(machine.info(), process=self.ctx.name)

    @endpoint("models", internal=True)
    async def models(self, model_name: str, query_details: Any = None) -> list[dict[str, Any]] | None:
        items = self.model_snapshot(model_name, query_details)
        if items is None:
            return None
        return [{"id": item_id, "data": data} for item_id, data in items]


def _state_observer(bus: Bus) -> Callable[[Automat, str, str, str], None]:
    def observe(machine: Automat, old: str, new: str, event: str) -> None:
        data = {"automat_id": machine.id, "index": machine.index, "name": machine.name,
                "old_state": old, "new_state": new, "event": event}
        bus.spawn(bus.publish_event("state-changed", data))

    return observe


async def _main(name: str, home: NodeHome, factory: Callable[[ProcessContext], ServiceBase]) -> None:
    home.ensure()
    config = ConfigStore(home.options_file)
    url = f"nats://127.0.0.1:{config.get('interface/bus/port')}"
    bus = await Bus.connect(url, home.bus_token(), name)
    ctx = ProcessContext(name=name, home=home, bus=bus, config=config,
                         metrics=ProcessMetrics(name, lambda: bus.nc.stats))
    ctx.automats.observe(_state_observer(bus))
    ctx.metrics.lag.start()
    service = factory(ctx)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    async def config_changed(msg: Any) -> None:
        try:
            keys = list((codec.loads(msg.data).get("data") or {}).get("keys") or [])
        except (ValueError, AttributeError):
            keys = []
        config.reload()
        try:
            await service.on_config_changed(keys)
        except Exception:  # noqa: BLE001 - one bad reaction must not stop the process
            log.exception("config change handling failed")

    await bus.nc.subscribe(subjects.event(subjects.CONFIG_CHANGED_EVENT), cb=config_changed)
    await service.start()
    micro = await serve(bus, service)
    log.info("%s started, pid %d", name, os.getpid())
    await bus.publish_event("process-started", {"process": name, "pid": os.getpid()})
    await stopping.wait()
    log.info("%s stopping", name)
    await micro.stop()
    try:
        await asyncio.wait_for(service.stop(), timeout=8)
    except asyncio.TimeoutError:
        log.warning("%s did not drain in time", name)
    await bus.close()


def run(name: str, factory: Callable[[ProcessContext], ServiceBase]) -> None:
    """Entry point of `python -m services.<name> --home DIR`."""
    parser = argparse.ArgumentParser(
        prog=f"bitdust-{name}", description=f"BitDust node process: {name}",
        epilog=f"environment: {LOOP_ENV}=asyncio runs the standard event loop instead of uvloop; "
               f"{CPU_ENV}=N runs the process on CPU N only (supervisord sets it for the gateway)")
    parser.add_argument("--home", help="node home folder (default $BITDUST_HOME or ~/.bitdust)")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    args = parser.parse_args()
    logs.setup(name, args.debug)
    _pin_to_cpu(os.environ.get(CPU_ENV, ""))
    main = _main(name, NodeHome(resolve_home(args.home)), factory)
    if os.environ.get(LOOP_ENV) == "asyncio":
        asyncio.run(main)
        return
    try:
        import uvloop
    except ImportError:  # a platform uvloop does not build on: the standard loop
        asyncio.run(main)
    else:
        uvloop.run(main)


LOOP_ENV = "BITDUST_EVENT_LOOP"
"""`asyncio` runs the process on the standard library's event loop instead of uvloop (to compare)."""
CPU_ENV = "BITDUST_CPU"
"""The CPU supervisord asks this process to run on (`deploy.node.shared_cpu`); unset: any."""


def _pin_to_cpu(cpu: str) -> None:
    if not cpu.isdigit() or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {int(cpu)})
    except OSError as err:
        log.warning("cannot run on CPU %s: %s", cpu, err)
