"""Transport benchmark: ping round trips and 4 MiB payload throughput between two nodes.

    .venv/bin/python -m bench.transport [--pings 300] [--blobs 40]

Two nodes run in this process, each with its own nats-server, a fake identity process
(1024-bit key) and the real transport service (see tests/service/test_transport_harness.py).
Measured:
  * ping: `user_ping` API calls (client -> bus -> transport -> TCP -> peer -> Ack), p50 / p99;
  * packet: signed `Data` packets of 4 MiB from one gateway to the other, each acknowledged by
    the peer (sign, frame, send, verify, replay check, Ack), 4 in flight;
  * bus path: the same through `transport.send` with `payload_b64`, delivered to a consumer on
    the peer's `inbox.Data` (adds base64 and a bus hop on the sender's side);
  * bus raw path: the same through `transport.send_raw` (raw bytes + meta header on the sender's bus);
  * spool path: the same through `transport.send_file` from a spool file: no payload on either bus.
  In the last three the peer's transport hands the payload to its consumer as a spool file.
  * baseline: a plain asyncio TCP copy of the same 4 MiB messages over loopback, in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from common import codec, spool, subjects
from tests.helpers import free_port
from tests.service.test_transport_harness import Directory, Node, transport_node

MIB = 1024 * 1024
BLOB = 4 * MIB


class AckInbox:
    """An inbox consumer that acknowledges at once, to measure the transport alone."""

    async def deliver(self, pkt: Any, timeout: float) -> dict[str, Any]:
        return {"command": "Ack", "payload": None}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_ping(alice: Node, bob: Node, count: int) -> dict[str, float]:
    await alice.api("user_ping", user_id=bob.idurl)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await alice.api("user_ping", user_id=bob.idurl)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": statistics.median(times), "p99_ms": _pct(times, 0.99), "count": count}


async def bench_packets(alice: Node, bob: Node, count: int, window: int = 4) -> float:
    assert alice.transport and bob.transport
    bob.transport.gateway.inbox = AckInbox()
    blob = bytes(range(256)) * (BLOB // 256)
    gate = asyncio.Semaphore(window)

    async def one() -> None:
        async with gate:
            reply = await alice.transport.gateway.send(bob.idurl, "Data", blob, binary=True, timeout=60)
            assert reply is not None and reply.command == "Ack"

    await one()
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count * BLOB / MIB / (time.perf_counter() - started)


async def pipelined(one: Callable[[], Awaitable[None]], count: int) -> float:
    """MiB/s of `count` 4 MiB transfers made by `one` (after one warm-up), run concurrently."""
    await one()
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count * BLOB / MIB / (time.perf_counter() - started)


async def ack_size(msg: Any) -> None:
    """An `inbox.Data` consumer that acknowledges a spooled payload with its size (the transport removes it)."""
    await msg.respond(codec.dumps({"command": "Ack", "payload": codec.loads(msg.data)["payload_size"]}))


async def bench_bus_path(alice: Node, bob: Node, count: int, window: int = 4) -> float:
    assert bob.transport
    bob.transport.gateway.inbox = bob.transport.inbox
    sub = await bob.client.nc.subscribe(subjects.inbox("Data"), cb=ack_size)
    payload = base64.b64encode(bytes(range(256)) * (BLOB // 256)).decode()
    gate = asyncio.Semaphore(window)

    async def one() -> None:
        async with gate:
            reply = await alice.send(bob, "Data", payload_b64=payload, timeout=60)
            assert reply["command"] == "Ack", reply

    try:
        return await pipelined(one, count)
    finally:
        await sub.unsubscribe()


async def bench_bus_raw(alice: Node, bob: Node, count: int, window: int = 4) -> float:
    """4 MiB through `transport.send_raw` to a consumer on the peer's `inbox.Data`, raw bytes all the way."""
    assert bob.transport
    bob.transport.gateway.inbox = bob.transport.inbox
    sub = await bob.client.nc.subscribe(subjects.inbox("Data"), cb=ack_size)
    payload = bytes(range(256)) * (BLOB // 256)
    gate = asyncio.Semaphore(window)

    async def one() -> None:
        async with gate:
            meta, body = await alice.client.request_binary(
                subjects.internal("transport", "send_raw"),
                {"remote_idurl": bob.idurl, "command": "Data", "timeout": 60}, payload, timeout=65)
            assert meta is not None and meta["command"] == "Ack" and codec.loads(body) == BLOB

    try:
        return await pipelined(one, count)
    finally:
        await sub.unsubscribe()


async def bench_spool(alice: Node, bob: Node, count: int, window: int = 4) -> float:
    """4 MiB through `transport.send_file` from a spool file to a consumer handed a spool file."""
    assert bob.transport
    bob.transport.gateway.inbox = bob.transport.inbox
    sub = await bob.client.nc.subscribe(subjects.inbox("Data"), cb=ack_size)
    payload = bytes(range(256)) * (BLOB // 256)
    path = spool.write_new(alice.home.spool, payload, prefix="out")
    request = {"remote_idurl": bob.idurl, "command": "Data", "path": str(path), "timeout": 60,
               "payload_sha256": hashlib.sha256(payload).hexdigest()}
    gate = asyncio.Semaphore(window)

    async def one() -> None:
        async with gate:
            reply = await alice.client.call(subjects.internal("transport", "send_file"), request, timeout=65)
            assert reply["command"] == "Ack" and reply["payload"] == BLOB, reply

    try:
        return await pipelined(one, count)
    finally:
        await sub.unsubscribe()
        path.unlink()


async def bench_plain_tcp(count: int) -> float:
    """Plain asyncio streams: send `count` length-prefixed 4 MiB messages, each acknowledged."""
    blob = bytes(range(256)) * (BLOB // 256)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                await reader.readexactly(size)
                writer.write(b"k")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    for _ in range(count):
        writer.write(len(blob).to_bytes(4, "big"))
        writer.write(blob)
        await writer.drain()
        await reader.readexactly(1)
    elapsed = time.perf_counter() - started
    writer.close()
    server.close()
    return count * BLOB / MIB / elapsed


async def main(pings: int, blobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory: Directory = {}
        async with transport_node(Path(tmp), "alice", directory) as alice, \
                transport_node(Path(tmp), "bob", directory) as bob:
            ping = await bench_ping(alice, bob, pings)
            baseline = await bench_plain_tcp(blobs)
            packets = await bench_packets(alice, bob, blobs)
            bus_path = await bench_bus_path(alice, bob, max(4, blobs // 2))
            bus_raw = await bench_bus_raw(alice, bob, blobs)
            spool_path = await bench_spool(alice, bob, blobs)
    return {
        "ping_p50_ms": round(ping["p50_ms"], 3), "ping_p99_ms": round(ping["p99_ms"], 3),
        "plain_tcp_mib_s": round(baseline, 1), "packets_4mib_mib_s": round(packets, 1),
        "packets_vs_plain": round(packets / baseline, 3), "bus_path_4mib_mib_s": round(bus_path, 1),
        "bus_path_vs_plain": round(bus_path / baseline, 3),
        "bus_raw_4mib_mib_s": round(bus_raw, 1), "bus_raw_vs_plain": round(bus_raw / baseline, 3),
        "spool_4mib_mib_s": round(spool_path, 1), "spool_vs_plain": round(spool_path / baseline, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--blobs", type=int, default=40)
    args = parser.parse_args()
    for name, value in asyncio.run(main(args.pings, args.blobs)).items():
        print(f"{name:24s} {value}")
