"""A 200-node Kademlia network in one event loop on loopback UDP: lookups under 20% node loss.

Measures the rounds (hops) of iterative value lookups and their success rate after a fifth of the
nodes vanish without warning (their sockets close; requests to them time out).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

from services.dht import records
from services.dht.node import DhtNode
from services.dht.storage import DhtStore

NODES = 200
KEYS = 100
LOOKUPS = 300
LOSS = 0.2
SUCCESS_THRESHOLD = 0.97


async def _build(count: int, rng: random.Random) -> list[DhtNode]:
    nodes = []
    for _ in range(count):
        node = DhtNode(DhtStore(":memory:"), rpc_timeout=1.0)
        await node.listen(0)
        nodes.append(node)
    for i, node in enumerate(nodes[1:], start=1):
        # Join through the seed or any node already in the network, as real nodes do.
        entry = nodes[0] if i < 5 else nodes[rng.randrange(i)]
        await node.bootstrap([entry.address])
    return nodes


async def _bounded(coros: list, limit: int) -> list:
    gate = asyncio.Semaphore(limit)

    async def run(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


async def test_lookups_survive_losing_a_fifth_of_the_nodes():
    rng = random.Random(7)
    started = time.monotonic()
    nodes = await _build(NODES, rng)
    built = time.monotonic() - started
    try:
        keys = [f"sim-key-{i}" for i in range(KEYS)]
        writes = []
        for key in keys:
            env = records.make_envelope(0, "skip_validation", key, {"k": key}, time.time() + 600, "00" * 20)
            writes.append(rng.choice(nodes).publish(env))
        stored = await _bounded(writes, 10)
        # 200 nodes share one event loop: under a burst a STORE can miss its 1 s deadline.
        written = [key for key, (accepted, _) in zip(keys, stored, strict=True) if accepted]
        assert len(written) >= 0.95 * KEYS

        lost = set(rng.sample(range(NODES), int(NODES * LOSS)))
        for i in lost:
            nodes[i].stop()
        alive = [n for i, n in enumerate(nodes) if i not in lost]

        async def lookup(key: str) -> tuple[bool, int, float]:
            reader = rng.choice(alive)
            t0 = time.monotonic()
            found = await reader.get_remote(records.storage_key(0, "skip_validation", key))
            ok = any(v["data"] == {"k": key} for v in found.values)
            return ok, found.rounds, time.monotonic() - t0

        lookup_started = time.monotonic()
        results = await _bounded([lookup(rng.choice(written)) for _ in range(LOOKUPS)], 50)
        lookups_took = time.monotonic() - lookup_started
        success = sum(ok for ok, _, _ in results) / len(results)
        hops = [rounds for ok, rounds, _ in results if ok]
        latencies = sorted(t for _, _, t in results)
        print(f"\nDHT simulation: {NODES} nodes (built in {built:.1f}s), {len(written)}/{KEYS} keys written, "
              f"{len(lost)} nodes lost ({LOSS:.0%})")
        print(f"  lookups: {len(results)}, success {success:.1%}, hops mean {statistics.mean(hops):.2f} "
              f"median {statistics.median(hops):.0f} max {max(hops)}")
        print(f"  lookup latency p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f} ms; all lookups in {lookups_took:.1f}s")
        assert success >= SUCCESS_THRESHOLD
        assert statistics.mean(hops) <= 6
    finally:
        for node in nodes:
            node.stop()
