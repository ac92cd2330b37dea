"""The storage process's samples for `GET /metrics` (`common.metrics`): suppliers, space, transfers.

Gauges are read from the customer and supplier roles when scraped; counters follow the events the
process already emits (`upload-progress`, `download-finished`, `fragment-repaired`, …), so the
transfer code needs no counting of its own.
"""

from __future__ import annotations

from typing import Any, Protocol

from common.metrics import ProcessMetrics, Samples

RESULTS = {"finished": "ready", "failed": "failed", "ready": "ready", "degraded": "degraded"}
"""The `result` label: an event's job state when it is one of these, else what the event says."""


class _Roles(Protocol):
    customer: Any
    supplier: Any


class StorageMetrics:
    """Counts transfer events into `metrics` and reports the roles' gauges."""

    def __init__(self, metrics: ProcessMetrics, roles: _Roles):
        self.metrics = metrics
        self.roles = roles
        self._bytes_seen: dict[tuple[str, str], int] = {}
        metrics.register(self.gauges)
        # Series that exist from the start, at zero, so a rate over them is defined before the first event.
        metrics.inc("bitdust_fragments_repaired_total", 0)
        for kind in ("upload", "download", "rebuild"):
            if kind != "rebuild":  # a rebuild reports fragments sent, not bytes
                metrics.inc("bitdust_transfer_bytes_total", 0, kind=kind)
            metrics.inc("bitdust_transfers_finished_total", 0, kind=kind, result="ready")
            metrics.inc("bitdust_transfers_finished_total", 0, kind=kind, result="failed")
        for result in ("ready", "failed"):
            metrics.inc("bitdust_rebuilds_total", 0, result=result)

    def observe(self, event_id: str, data: dict[str, Any]) -> None:
        """Count one storage event."""
        kind, _, what = event_id.partition("-")
        if kind in ("upload", "download") and what in ("progress", "finished", "failed"):
            key = (kind, str(data.get("version") or data.get("remote_path") or ""))
            done = int(data.get("bytes_processed") or 0)
            delta = done - self._bytes_seen.get(key, 0)
            if delta > 0:
                self.metrics.inc("bitdust_transfer_bytes_total", delta, kind=kind)
            if what == "progress":
                self._bytes_seen[key] = max(done, self._bytes_seen.get(key, 0))
            else:
                self._bytes_seen.pop(key, None)
                result = str(data.get("state") or "") if data.get("state") in RESULTS else RESULTS[what]
                self.metrics.inc("bitdust_transfers_finished_total", kind=kind, result=result)
        elif event_id == "fragment-repaired":
            self.metrics.inc("bitdust_fragments_repaired_total", int(data.get("stored") or 0))
        elif event_id == "rebuild-finished":
            result = "ready" if data.get("state") == "ready" else "failed"
            self.metrics.inc("bitdust_rebuilds_total", result=result)
            self.metrics.inc("bitdust_transfers_finished_total", kind="rebuild", result=result)

    def gauges(self) -> Samples:
        customer, supplier = self.roles.customer, self.roles.supplier
        by_state: dict[str, int] = {}
        for position in customer.employer.positions:
            if position.idurl:
                state = position.state or "UNKNOWN"
                by_state[state] = by_state.get(state, 0) + 1
        transfers = customer.transfers
        running = {kind: sum(1 for job in jobs.values() if not job.done.is_set())
                   for kind, jobs in (("upload", transfers.uploads), ("download", transfers.downloads),
                                      ("rebuild", transfers.rebuilds))}
        consumed = customer.space_consumed()
        donated = supplier.space_donated()
        return {
            "bitdust_suppliers": [({"state": s}, n) for s, n in sorted(by_state.items())],
            "bitdust_suppliers_wanted": [({}, customer.employer.desired)],
            "bitdust_customers": [({}, donated.get("customers_num", 0))],
            "bitdust_space_needed_bytes": [({}, consumed.get("needed", 0))],
            "bitdust_space_used_bytes": [({"role": "customer"}, consumed.get("used", 0)),
                                         ({"role": "supplier"}, donated.get("used", 0))],
            "bitdust_space_donated_bytes": [({}, donated.get("donated", 0))],
            "bitdust_transfers_running": [({"kind": k}, n) for k, n in running.items()],
        }
