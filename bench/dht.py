"""dht_value_get latency among in-process nodes on loopback UDP: p50/p99, local hit vs network lookup.

    .venv/bin/python -m bench.dht [--nodes 12] [--reads 500]

Values are written by one node; reads go through `Directory.read` (the code behind the
`dht_value_get` endpoint, minus the bus hop of ~0.25 ms) on the other nodes. A node that holds
a copy answers from sqlite; `--remote` forces every read over the network.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from services.dht import records
from services.dht.directory import Directory
from services.dht.node import DhtNode
from services.dht.storage import DhtStore


class _NoIdentity:
    async def sign(self, data: bytes) -> dict[str, Any]:
        raise RuntimeError("general values are not signed")

    async def my_identity(self) -> dict[str, Any]:
        return {}

    async def fetch(self, idurl: str) -> dict[str, Any]:
        return {}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def main(count: int, reads: int, ksize: int) -> None:
    nodes = []
    for _ in range(count):
        node = DhtNode(DhtStore(":memory:"), ksize=ksize, rpc_timeout=2.0)
        await node.listen(0)
        nodes.append(Directory(node, _NoIdentity()))
    for d in nodes[1:]:
        await d.node.bootstrap([nodes[0].node.address])
    keys = [f"bench-{i}" for i in range(50)]
    for key in keys:
        await nodes[1].write("skip_validation", key, {"key": key, "payload": "x" * 200})

    for mode in ("local-or-network", "network"):
        latencies = []
        for i in range(reads):
            reader = nodes[2 + i % (count - 2)]
            key = keys[i % len(keys)]
            t0 = time.perf_counter()
            if mode == "network":
                found = await reader.node.get_remote(records.storage_key(0, "skip_validation", key))
                ok = bool(found.values)
            else:
                ok = (await reader.read("skip_validation", key)).ok
            latencies.append(time.perf_counter() - t0)
            assert ok, key
        print(f"{mode:>17}: {reads} reads on {count} nodes (k={ksize}): p50 {_pct(latencies, 0.5):.2f} ms, "
              f"p99 {_pct(latencies, 0.99):.2f} ms, mean {statistics.mean(latencies) * 1000:.2f} ms")
    for d in nodes:
        d.node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=12)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--ksize", type=int, default=4, help="replication factor (small, so most reads go remote)")
    args = parser.parse_args()
    asyncio.run(main(args.nodes, args.reads, args.ksize))
