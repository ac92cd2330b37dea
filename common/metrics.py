"""What each process tells `GET /metrics` about itself, and the one list of metric names.

Every process keeps a `ProcessMetrics` (in its `ProcessContext`) and answers the internal verb
`<process>.metrics` with `snapshot()`: its resident memory, CPU seconds, event-loop lag, what
crossed its bus connection, and samples of the domain metrics its service registered. The api
process asks every process when Prometheus scrapes (`services/api/metrics.py`) and writes the text
format; nothing is pushed or kept between scrapes but the counters themselves.

`CATALOG` names every metric the node exports, with its type, help and label names: the
exposition renders only what is listed here, and the tests check the scrape against it. Labels
never name a peer (a peer-sized label set grows without bound on a busy supplier).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from common.loop_lag import LagMonitor

log = logging.getLogger(__name__)

COUNTER, GAUGE = "counter", "gauge"
LAG_INTERVAL = 0.5
"""Seconds between the lag monitor's wake-ups: coarse, as it runs in every process all the time."""


@dataclass(frozen=True)
class Spec:
    """One exported metric: its name (with `_total` for counters), type, help and label names."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()


CATALOG: tuple[Spec, ...] = (
    # every program (from `ProcessMetrics.snapshot`, filled in by the api process)
    Spec("bitdust_program_up", GAUGE, "1 when the program answered this scrape over the bus", ("program",)),
    Spec("bitdust_program_resident_memory_bytes", GAUGE, "Resident set size of the program", ("program",)),
    Spec("bitdust_program_cpu_seconds_total", COUNTER, "User and system CPU time of the program", ("program",)),
    Spec("bitdust_program_start_time_seconds", GAUGE, "Unix time the program started", ("program",)),
    Spec("bitdust_program_event_loop_lag_seconds", GAUGE,
         "How late the program's event loop ran due work over the last minute or so", ("program", "quantile")),
    Spec("bitdust_bus_messages_total", COUNTER, "Messages the program's bus connection carried",
         ("program", "direction")),
    Spec("bitdust_bus_bytes_total", COUNTER, "Payload bytes the program's bus connection carried",
         ("program", "direction")),
    # api
    Spec("bitdust_service_state", GAUGE, "1 for the current state of each logical service", ("service", "state")),
    Spec("bitdust_api_requests_total", COUNTER, "API requests answered, by API method and HTTP status",
         ("method", "status")),
    # transport
    Spec("bitdust_transport_bytes_total", COUNTER, "Packet bytes sent and received", ("direction",)),
    Spec("bitdust_transport_packets_total", COUNTER, "Packets sent and received, by command",
         ("direction", "command")),
    Spec("bitdust_transport_failures_total", COUNTER, "Packets that failed to go out or were refused, by reason",
         ("direction", "reason")),
    Spec("bitdust_transport_send_failures_total", COUNTER, "Packets that failed to go out, by command", ("command",)),
    Spec("bitdust_transport_connections", GAUGE, "Open connections to other nodes, by protocol", ("protocol",)),
    Spec("bitdust_peers", GAUGE, "Known peers by presence state", ("state",)),
    # storage
    Spec("bitdust_suppliers", GAUGE, "Hired suppliers by state", ("state",)),
    Spec("bitdust_suppliers_wanted", GAUGE, "How many suppliers the node wants"),
    Spec("bitdust_customers", GAUGE, "Customers this node stores for"),
    Spec("bitdust_space_needed_bytes", GAUGE, "Space the node asks of its suppliers"),
    Spec("bitdust_space_used_bytes", GAUGE, "Space used: by this node's files on its suppliers, and by customers here",
         ("role",)),
    Spec("bitdust_space_donated_bytes", GAUGE, "Space this node offers its customers"),
    Spec("bitdust_transfers_running", GAUGE, "Uploads, downloads and rebuilds running", ("kind",)),
    Spec("bitdust_transfer_bytes_total", COUNTER, "Plain bytes of files uploaded and downloaded", ("kind",)),
    Spec("bitdust_transfers_finished_total", COUNTER, "Transfers that ended, by kind and result", ("kind", "result")),
    Spec("bitdust_fragments_repaired_total", COUNTER, "Fragments found bad or missing, rebuilt and sent back"),
    Spec("bitdust_rebuilds_total", COUNTER, "Positions rebuilt for a new supplier, by result", ("result",)),
    # messaging
    Spec("bitdust_messages_received_total", COUNTER, "Message packets that arrived, by kind and result",
         ("kind", "result")),
    Spec("bitdust_messages", GAUGE, "Messages in the history, by direction and state", ("direction", "state")),
)
BY_NAME = {spec.name: spec for spec in CATALOG}

Labels = dict[str, str]
Samples = dict[str, list[tuple[Labels, float]]]
Source = Callable[[], Samples]
"""A service's hook: the current samples of the metrics it owns, by metric name (cheap, no I/O)."""


class ProcessMetrics:
    """One process's counters and the hooks its service registered."""

    def __init__(self, program: str, bus_stats: Callable[[], dict[str, int]] | None = None):
        self.program = program
        self.started = time.time()
        self.lag = LagMonitor(interval=LAG_INTERVAL, samples=120)
        self._bus_stats = bus_stats
        self._sources: list[Source] = []
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def register(self, source: Source) -> None:
        """Add a hook read at every scrape."""
        self._sources.append(source)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add `amount` to counter `name` (one of `CATALOG`) with `labels`."""
        series = self._counters.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0) + amount

    def samples(self) -> Samples:
        """The counters kept here and every hook's samples, by metric name."""
        found: Samples = {name: [(dict(key), value) for key, value in series.items()]
                          for name, series in self._counters.items()}
        for source in self._sources:
            try:
                for name, items in source().items():
                    found.setdefault(name, []).extend(items)
            except Exception:  # noqa: BLE001 - one broken hook must not cost the whole scrape
                log.exception("metrics source failed")
        return found

    def snapshot(self) -> dict[str, Any]:
        """What `<process>.metrics` answers."""
        times = os.times()
        lag = self.lag.snapshot()
        return {"program": self.program, "pid": os.getpid(), "started": self.started,
                "rss_bytes": resident_bytes(), "cpu_seconds": times.user + times.system,
                "loop_lag_seconds": {"0.5": lag["p50_ms"] / 1000, "0.99": lag["p99_ms"] / 1000,
                                     "1": lag["max_ms"] / 1000},
                "bus": self._bus_stats() if self._bus_stats else {},
                "samples": {name: [[labels, value] for labels, value in items]
                            for name, items in self.samples().items()}}


def resident_bytes() -> int:
    """This process's resident set size now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
