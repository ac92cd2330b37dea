"""`GET /metrics`: every program's figures, asked for over the bus when scraped, in Prometheus's format.

Each Python process answers `<process>.metrics` (`common.metrics.ProcessMetrics.snapshot`); the
programs are asked at once, each with a short deadline, and one that is down or slow shows
`bitdust_program_up 0` instead of failing the scrape. Only the metrics named in
`common.metrics.CATALOG` are written, with exactly the labels listed there.

`prometheus_client` is imported with the first scrape, so a node nobody scrapes does not carry it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from common import subjects
from common.errors import NodeError
from common.metrics import BY_NAME, CATALOG, COUNTER, Spec
from common.process import ProcessContext

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 2.0
"""Seconds each program has to answer a scrape (Prometheus's own default timeout is 10 s)."""
PROGRAMS = ("bus", *subjects.PROCESSES)


async def collect(ctx: ProcessContext) -> dict[str, dict[str, Any] | None]:
    """Every Python program's snapshot, None for one that did not answer in time."""

    async def one(name: str) -> dict[str, Any] | None:
        if name == ctx.name:
            return ctx.metrics.snapshot()
        try:
            found = await ctx.bus.call_internal(name, "metrics", timeout=SCRAPE_TIMEOUT)
        except NodeError as err:
            log.info("metrics of %s unavailable: %s", name, err.reason)
            return None
        return found if isinstance(found, dict) else None

    results = await asyncio.gather(*(one(name) for name in subjects.PROCESSES))
    return dict(zip(subjects.PROCESSES, results, strict=True))


def render(snapshots: dict[str, dict[str, Any] | None], bus_up: bool) -> tuple[bytes, str]:
    """The exposition text of `snapshots` and its content type."""
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

    families = {spec.name: _family(spec) for spec in CATALOG}

    def add(name: str, labels: dict[str, Any], value: Any) -> None:
        spec = BY_NAME[name]
        families[name].add_metric([str(labels.get(label, "")) for label in spec.labels], float(value))

    add("bitdust_program_up", {"program": "bus"}, 1 if bus_up else 0)
    for program, snap in snapshots.items():
        add("bitdust_program_up", {"program": program}, 1 if snap else 0)
        if not snap:
            continue
        add("bitdust_program_resident_memory_bytes", {"program": program}, snap.get("rss_bytes") or 0)
        add("bitdust_program_cpu_seconds_total", {"program": program}, snap.get("cpu_seconds") or 0)
        add("bitdust_program_start_time_seconds", {"program": program}, snap.get("started") or 0)
        for quantile, seconds in sorted((snap.get("loop_lag_seconds") or {}).items()):
            add("bitdust_program_event_loop_lag_seconds", {"program": program, "quantile": quantile}, seconds)
        bus = snap.get("bus") or {}
        for direction in ("in", "out"):
            add("bitdust_bus_messages_total", {"program": program, "direction": direction},
                bus.get(f"{direction}_msgs") or 0)
            add("bitdust_bus_bytes_total", {"program": program, "direction": direction},
                bus.get(f"{direction}_bytes") or 0)
        for name, items in (snap.get("samples") or {}).items():
            if name not in BY_NAME:
                log.warning("%s reported unknown metric %s", program, name)
                continue
            for labels, value in items:
                add(name, labels, value)
    # Text format 0.0.4: every Prometheus reads it (names here are plain ASCII, so 1.0.0 adds nothing).
    return generate_latest(_Registry(list(families.values()))), CONTENT_TYPE_PLAIN_0_0_4


def _family(spec: Spec) -> Any:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    kind = CounterMetricFamily if spec.kind == COUNTER else GaugeMetricFamily
    return kind(spec.name, spec.help, labels=list(spec.labels))


class _Registry:
    """What `generate_latest` reads: families made for this one scrape."""

    def __init__(self, families: list[Any]):
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def service_state_samples(states: dict[str, str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """`bitdust_service_state`: 1 for each logical service's current state."""
    return {"bitdust_service_state": [({"service": name, "state": state}, 1) for name, state in sorted(states.items())]}
