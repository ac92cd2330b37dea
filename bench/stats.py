"""What every benchmark reports of its samples."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, nearest rank: p50 is `percentile(values, 0.5)`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50 (the median) and p99 of latencies in ms, rounded to the µs, as the JSON reports give them."""
    return {"p50_ms": round(statistics.median(values), 3), "p99_ms": round(percentile(values, 0.99), 3)}
