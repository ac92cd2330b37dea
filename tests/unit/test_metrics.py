"""Metrics without a node: each process's snapshot, the services' hooks, the Prometheus text."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from common.metrics import BY_NAME, CATALOG, COUNTER, ProcessMetrics
from services.api import metrics as api_metrics
from services.api.gateway import _bearer
from services.storage.metrics import StorageMetrics
from services.transport.metrics import transport_samples
from services.transport.stats import PacketStats


def _parse(text: bytes) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def test_snapshot_carries_the_process_figures_and_registered_samples():
    metrics = ProcessMetrics("storage", lambda: {"in_msgs": 3, "out_msgs": 4, "in_bytes": 30, "out_bytes": 40})
    metrics.inc("bitdust_transfer_bytes_total", 100, kind="upload")
    metrics.inc("bitdust_transfer_bytes_total", 50, kind="upload")
    metrics.register(lambda: {"bitdust_customers": [({}, 2)]})

    def broken() -> dict:
        raise RuntimeError("a hook that fails")

    metrics.register(broken)
    snap = metrics.snapshot()
    assert snap["program"] == "storage" and snap["rss_bytes"] > 0 and snap["cpu_seconds"] > 0
    assert snap["bus"]["out_msgs"] == 4 and set(snap["loop_lag_seconds"]) == {"0.5", "0.99", "1"}
    assert snap["samples"]["bitdust_transfer_bytes_total"] == [[{"kind": "upload"}, 150]]
    assert snap["samples"]["bitdust_customers"] == [[{}, 2]]


def test_render_follows_the_catalog_and_a_program_down_is_up_0():
    storage = ProcessMetrics("storage", lambda: {"in_msgs": 3, "out_msgs": 4, "in_bytes": 30, "out_bytes": 40})
    storage.inc("bitdust_transfers_finished_total", kind="upload", result="ready")
    storage.register(lambda: {"bitdust_not_in_catalog": [({}, 1)], "bitdust_suppliers": [({"state": "CONNECTED"}, 3)]})
    body, content_type = api_metrics.render({"storage": storage.snapshot(), "messaging": None}, bus_up=True)
    assert content_type.startswith("text/plain; version=0.0.4")
    families = _parse(body)
    up = {s.labels["program"]: s.value for s in families["bitdust_program_up"].samples}
    assert up == {"bus": 1.0, "storage": 1.0, "messaging": 0.0}
    assert "bitdust_not_in_catalog" not in body.decode()
    for spec in CATALOG:
        base = spec.name[:-len("_total")] if spec.kind == COUNTER else spec.name
        family = families[base]
        assert family.type == spec.kind, spec.name
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            assert set(sample.labels) == set(spec.labels), (spec.name, sample.labels)
    finished = families["bitdust_transfers_finished"].samples
    assert [(s.labels, s.value) for s in finished if s.name.endswith("_total")] == [
        ({"kind": "upload", "result": "ready"}, 1.0)]
    bus = {(s.labels["program"], s.labels["direction"]): s.value for s in families["bitdust_bus_bytes"].samples}
    assert bus == {("storage", "in"): 30.0, ("storage", "out"): 40.0}


def test_storage_counts_transfer_bytes_as_they_move_and_results_once():
    metrics = ProcessMetrics("storage")
    roles = SimpleNamespace(customer=None, supplier=None)
    counting = StorageMetrics(metrics, roles)

    def job(done: int, state: str = "running") -> dict:
        return {"version": "k:a/F1", "bytes_processed": done, "state": state}

    for done in (16, 32, 48):
        counting.observe("upload-progress", job(done))
    counting.observe("upload-finished", job(50, "degraded"))
    counting.observe("download-failed", {"version": "k:a/F1", "bytes_processed": 16, "state": "failed"})
    counting.observe("fragment-repaired", {"stored": 2})
    counting.observe("rebuild-finished", {"state": "ready"})
    counts = {(name, tuple(sorted(labels.items()))): value
              for name, items in metrics.samples().items() if name != "bitdust_suppliers" for labels, value in items}
    assert counts[("bitdust_transfer_bytes_total", (("kind", "upload"),))] == 50
    assert counts[("bitdust_transfer_bytes_total", (("kind", "download"),))] == 16
    assert counts[("bitdust_transfers_finished_total", (("kind", "upload"), ("result", "degraded")))] == 1
    assert counts[("bitdust_transfers_finished_total", (("kind", "download"), ("result", "failed")))] == 1
    assert counts[("bitdust_fragments_repaired_total", ())] == 2
    assert counts[("bitdust_rebuilds_total", (("result", "ready"),))] == 1


def test_transport_samples_have_no_peer_labels():
    stats = PacketStats()
    stats.sent("http://a/alice.xml", 100, "Data")
    stats.received("http://b/bob.xml", 40, "Ack")
    stats.dropped("bad_signature", 10, known_sender=False)
    stats.send_failed("peer_offline", "Data")
    link = SimpleNamespace()
    gateway = SimpleNamespace(stats=stats, transports=[SimpleNamespace(proto="tcp", links=lambda: [link, link])],
                              presence=SimpleNamespace(items=lambda: [("http://a/alice.xml", "CONNECTED")]))
    samples = transport_samples(gateway)
    assert ({"direction": "out", "command": "Data"}, 1) in samples["bitdust_transport_packets_total"]
    assert ({"direction": "in", "reason": "bad_signature"}, 1) in samples["bitdust_transport_failures_total"]
    assert samples["bitdust_transport_connections"] == [({"protocol": "tcp"}, 2)]
    assert samples["bitdust_transport_send_failures_total"] == [({"command": "Data"}, 1)]
    for name, items in samples.items():
        for labels, _ in items:
            assert set(labels) == set(BY_NAME[name].labels)
            assert not any("alice" in str(v) for v in labels.values())


def test_bearer_secret():
    assert _bearer("Bearer s3cret") == "s3cret"
    assert _bearer("bearer  s3cret ") == "s3cret"
    assert _bearer("Basic dXNlcjpwYXNz") == ""
    assert _bearer(None) == ""
