"""dht_value_get latency among in-process nodes on loopback UDP: p50/p99, local hit vs network lookup.

    .venv/bin/python -m bench.dht [--nodes 12] [--reads 500] [--ksize 4]

Values are written by one node; reads go through `Directory.read` (the code behind the
`dht_value_get` endpoint, minus the bus hop of ~0.25 ms) on the other nodes. A node that holds
a copy answers from sqlite; the `network` mode sends every read over the network
(`DhtNode.get_remote`). Both modes make the same reads (same readers, same keys, same order), so
`local-or-network` against `network` shows what local copies save.

Baseline of the `network` mode, in this run, this process and this event loop (as the nodes are):
each lookup replayed right after it as plain UDP request -> answer exchanges with a sink that
answers every datagram at once: as many rounds as the lookup took (`LookupResult.rounds`), its RPCs
spread evenly over them, the RPCs of a round in flight together and the round over when all are
answered (as the crawl's `gather`), each request and answer as large as the lookup's average
(the reader's `TrafficStats` byte and RPC counters around the lookup). The ratio is of the p50s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import struct
import time
from typing import Any, cast

from services.dht import records
from services.dht.directory import Directory
from services.dht.node import DhtNode
from services.dht.storage import DhtStore
from bench.stats import percentile

PLAIN_HEADER = struct.Struct(">II")
"""A plain datagram: request number, size of the answer wanted."""


class _NoIdentity:
    async def sign(self, data: bytes) -> dict[str, Any]:
        raise RuntimeError("general values are not signed")

    async def my_identity(self) -> dict[str, Any]:
        return {}

    async def fetch(self, idurl: str) -> dict[str, Any]:
        return {}


class PlainSink(asyncio.DatagramProtocol):
    """Answers every datagram at once with as many bytes as it asks for."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        number, answer = PLAIN_HEADER.unpack_from(data)
        self.transport.sendto(PLAIN_HEADER.pack(number, 0) + bytes(max(0, answer - PLAIN_HEADER.size)), addr)


class PlainClient(asyncio.DatagramProtocol):
    """Numbered UDP requests to a `PlainSink`, answers matched by number."""

    def __init__(self) -> None:
        self._numbers = itertools.count()
        self._waiting: dict[int, asyncio.Future[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        number, _ = PLAIN_HEADER.unpack_from(data)
        waiting = self._waiting.pop(number, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def call(self, request: int, answer: int) -> None:
        number = next(self._numbers)
        self._waiting[number] = answered = asyncio.get_running_loop().create_future()
        self.transport.sendto(PLAIN_HEADER.pack(number, answer) + bytes(max(0, request - PLAIN_HEADER.size)))
        await asyncio.wait_for(answered, 2.0)

    async def lookup(self, rounds: int, calls: int, request: int, answer: int) -> float:
        """Seconds of `rounds` rounds of concurrent exchanges, `calls` in all."""
        began = time.perf_counter()
        for index in range(rounds):
            count = calls // rounds + (1 if index < calls % rounds else 0)
            await asyncio.gather(*(self.call(request, answer) for _ in range(count)))
        return time.perf_counter() - began


def _pct(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def _traffic(node: DhtNode) -> tuple[int, int, int]:
    """(RPCs sent, bytes sent, bytes received) by the node so far."""
    stats = node.proto.stats
    return sum(stats.rpc_calls.values()), stats.bytes_sent, stats.bytes_received


def _line(mode: str, latencies: list[float], reads: int, count: int, ksize: int) -> str:
    return (f"{mode:>17}: {reads} reads on {count} nodes (k={ksize}): p50 {_pct(latencies, 0.5):.2f} ms, "
            f"p99 {_pct(latencies, 0.99):.2f} ms, mean {statistics.mean(latencies) * 1000:.2f} ms")


async def main(count: int, reads: int, ksize: int) -> None:
    nodes = []
    for _ in range(count):
        node = DhtNode(DhtStore(":memory:"), ksize=ksize, rpc_timeout=2.0)
        await node.listen(0)
        nodes.append(Directory(node, _NoIdentity()))
    entry = nodes[0].node.address
    assert entry is not None
    for d in nodes[1:]:
        await d.node.bootstrap([entry])
    keys = [f"bench-{i}" for i in range(50)]
    for key in keys:
        await nodes[1].write("skip_validation", key, {"key": key, "payload": "x" * 200})
    loop = asyncio.get_running_loop()
    sink_transport, _ = await loop.create_datagram_endpoint(PlainSink, local_addr=("127.0.0.1", 0))
    client_transport, client = await loop.create_datagram_endpoint(
        PlainClient, remote_addr=sink_transport.get_extra_info("sockname"))

    for mode in ("local-or-network", "network"):
        latencies, plain, shapes = [], [], []
        for i in range(reads):
            reader = nodes[2 + i % (count - 2)]
            key = keys[i % len(keys)]
            before = _traffic(reader.node)
            t0 = time.perf_counter()
            if mode == "network":
                found = await reader.node.get_remote(records.storage_key(0, "skip_validation", key))
                ok = bool(found.values)
            else:
                ok = (await reader.read("skip_validation", key)).ok
            latencies.append(time.perf_counter() - t0)
            assert ok, key
            if mode == "network":
                calls, sent, received = (after - first for after, first in zip(_traffic(reader.node), before,
                                                                                  strict=True))
                rounds, request, answer = max(1, found.rounds), sent // max(1, calls), received // max(1, calls)
                shapes.append((rounds, calls, request, answer))
                plain.append(await client.lookup(rounds, max(calls, rounds), request, answer))
        print(_line(mode, latencies, reads, count, ksize))
        if mode == "network":
            print(_line("plain UDP replay", plain, reads, count, ksize))
            print(f"{'':>17}  per lookup p50: {statistics.median(s[0] for s in shapes):g} rounds, "
                  f"{statistics.median(s[1] for s in shapes):g} RPCs, {statistics.median(s[2] for s in shapes):g} B "
                  f"out / {statistics.median(s[3] for s in shapes):g} B back each; "
                  f"p50 ratio network / plain {statistics.median(latencies) / statistics.median(plain):.1f}")
    client_transport.close()
    sink_transport.close()
    for d in nodes:
        d.node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=12)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--ksize", type=int, default=4, help="replication factor (small, so most reads go remote)")
    args = parser.parse_args()
    asyncio.run(main(args.nodes, args.reads, args.ksize))
