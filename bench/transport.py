"""Transport benchmark: ping round trips and 4 MiB payload throughput between two nodes.

    .venv/bin/python -m bench.transport [--pings 300] [--blobs 40] [--window 4]

Two nodes run in this process, each with its own nats-server, a fake identity process
(1024-bit key) and the real transport service (see tests/service/test_transport_harness.py).
Measured:
  * ping: `user_ping` API calls (client -> bus -> transport -> TCP -> peer -> Ack), one at a time,
    p50 / p99;
  * packet: signed `Data` packets of 4 MiB from one gateway to the other, each acknowledged by
    the peer (sign, frame, send, verify, replay check, Ack), `--window` (4) in flight;
  * bus path: the same through `transport.send` with `payload_b64`, delivered to a consumer on
    the peer's `inbox.Data` (adds base64 and a bus hop on the sender's side);
  * bus raw path: the same through `transport.send_raw` (raw bytes + meta header on the sender's bus);
  * spool path: the same through `transport.send_file` from a spool file: no payload on either bus.
  In the last three the peer's transport hands the payload to its consumer as a spool file.

Baselines, in this run and in this process (both ends on one event loop, as the two nodes are), on
one keep-alive loopback TCP connection to a plain asyncio sink that answers every message at once:
  * for ping: a plain round trip, one at a time, the request and the answer as large as the
    ping's `Identity` frame and its `Ack` frame were on the wire (the link's byte counters around a
    warm-up ping). The ping also crosses the sender's bus (client -> transport); the baseline does
    not, so that hop is part of what `ping_p50_vs_plain` shows;
  * for every 4 MiB path: messages as large as the `Data` packet's frame, `--window` in flight
    through the same `pipelined` helper and semaphore, writes serialised as the transport's are,
    each answered by a message as large as the `Ack` frame (byte counters around a warm-up packet);
    run before the first path and after the last, and the mean of the two taken, so drift in the
    load of the host during the run weighs on both sides alike.
  The sink receives each message into a buffer of its own size, as the transport does, and does
  nothing else with it. Every `*_vs_plain` ratio is against the baseline of the same shape.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from common import codec, spool, subjects
from tests.service.test_transport_harness import Directory, Node, transport_node
from bench.stats import percentile

MIB = 1024 * 1024
BLOB = 4 * MIB
ROOT = Path(__file__).resolve().parent.parent
PLAIN_HEADER = struct.Struct(">III")
"""A plain message: body length, message number, size of the answer wanted (header included)."""


class AckInbox:
    """An inbox consumer that acknowledges at once, to measure the transport alone."""

    async def deliver(self, pkt: Any, timeout: float) -> dict[str, Any]:
        return {"command": "Ack", "payload": None}


# ---- the plain TCP baseline -----------------------------------------------------------------------


class PlainSink(asyncio.BufferedProtocol):
    """Receives plain messages straight into a buffer of each one's size; answers each at once.

    The lightest receiver that still keeps every message whole in memory, as a transport must:
    no parsing, no hashing, no copy after the socket's.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._head = bytearray(PLAIN_HEADER.size)
        self._body: bytearray | None = None
        self._answer = 0
        self._number = 0
        self._pos = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._head if self._body is None else self._body)[self._pos:]

    def buffer_updated(self, nbytes: int) -> None:
        self._pos += nbytes
        if self._body is None:
            if self._pos < len(self._head):
                return
            length, self._number, self._answer = PLAIN_HEADER.unpack(self._head)
            self._body, self._pos = bytearray(length), 0
        if self._pos < len(self._body):
            return
        assert self._transport is not None
        size = max(0, self._answer - PLAIN_HEADER.size)
        self._transport.write(PLAIN_HEADER.pack(size, self._number, 0) + bytes(size))
        self._body, self._pos = None, 0


async def _listen() -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(PlainSink, "127.0.0.1", 0)


def serve_plain_sink() -> None:
    """Entry point of a sink process of its own: print the port it listens on, answer until killed."""

    async def run() -> None:
        server = await _listen()
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(run())


@contextlib.asynccontextmanager
async def plain_sink(separate_process: bool = False) -> AsyncIterator[int]:
    """The port of a plain sink on loopback: on this event loop, or in a child process of its own."""
    if not separate_process:
        server = await _listen()
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            server.close()
        return
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from bench.transport import serve_plain_sink; serve_plain_sink()",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        yield int(await asyncio.wait_for(proc.stdout.readline(), 30))
    finally:
        proc.terminate()
        await proc.wait()


class PlainLink:
    """One keep-alive connection to a plain sink: numbered messages, answers matched by number.

    Writes are serialised and each waits for the socket to drain, as `TcpLink.send_frame` does,
    so messages in flight queue the way the transport's packets do.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader, self._writer = reader, writer
        self._numbers = itertools.count()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._write_lock = asyncio.Lock()
        self._answers = asyncio.ensure_future(self._read_answers())

    @classmethod
    async def open(cls, port: int) -> "PlainLink":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def exchange(self, body: bytes, answer_size: int) -> None:
        """Send `body` in one message and wait for its answer of `answer_size` bytes."""
        number = next(self._numbers)
        answered = asyncio.get_running_loop().create_future()
        self._waiting[number] = answered
        async with self._write_lock:
            self._writer.write(PLAIN_HEADER.pack(len(body), number, answer_size))
            self._writer.write(body)
            await self._writer.drain()
        await answered

    async def _read_answers(self) -> None:
        while True:
            length, number, _ = PLAIN_HEADER.unpack(await self._reader.readexactly(PLAIN_HEADER.size))
            await self._reader.readexactly(length)
            self._waiting.pop(number).set_result(None)

    async def close(self) -> None:
        self._answers.cancel()
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


def plain_body(frame_size: int) -> bytes:
    """A plain message body that makes the whole message `frame_size` bytes long on the wire."""
    return bytes(range(256)) * (max(0, frame_size - PLAIN_HEADER.size) // 256) + \
        bytes(max(0, frame_size - PLAIN_HEADER.size) % 256)


async def plain_latency(count: int, request_size: int, answer_size: int) -> list[float]:
    """Milliseconds of `count` plain round trips made one at a time (after one warm-up)."""
    body = plain_body(request_size)
    async with plain_sink() as port:
        link = await PlainLink.open(port)
        try:
            await link.exchange(body, answer_size)
            times = []
            for _ in range(count):
                started = time.perf_counter()
                await link.exchange(body, answer_size)
                times.append((time.perf_counter() - started) * 1000)
            return times
        finally:
            await link.close()


async def plain_throughput(count: int, window: int, request_size: int, answer_size: int,
                           separate_process: bool = False) -> float:
    """MiB/s of payload in `count` plain messages of `request_size` bytes, `window` in flight, each answered.

    Counted as `BLOB` bytes per message, as the transport paths count their payload."""
    body = plain_body(request_size)
    gate = asyncio.Semaphore(window)
    async with plain_sink(separate_process) as port:
        link = await PlainLink.open(port)

        async def one() -> None:
            async with gate:
                await link.exchange(body, answer_size)

        try:
            return await pipelined(one, count)
        finally:
            await link.close()


# ---- the transport paths --------------------------------------------------------------------------


async def link_bytes(node: Node, peer_idurl: str) -> tuple[int, int]:
    """(sent, received) bytes on every link of `node` to `peer_idurl`, framing included."""
    links = await node.api("connections_list")
    mine = [link for link in links if link["idurl"] == peer_idurl]
    return sum(link["bytes_sent"] for link in mine), sum(link["bytes_received"] for link in mine)


async def wire_sizes(node: Node, peer_idurl: str, exchange: Callable[[], Awaitable[Any]]) -> tuple[int, int]:
    """The bytes one `exchange` put on the wire to the peer and back (a frame each way)."""
    sent, received = await link_bytes(node, peer_idurl)
    await exchange()
    sent_after, received_after = await link_bytes(node, peer_idurl)
    return sent_after - sent, received_after - received


async def bench_ping(alice: Node, bob: Node, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await alice.api("user_ping", user_id=bob.idurl)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def bench_packets(alice: Node, bob: Node, count: int, window: int = 4) -> float:
    assert alice.transport and bob.transport
    bob.transport.gateway.inbox = AckInbox()
    sender = alice.transport.gateway
    blob = bytes(range(256)) * (BLOB // 256)
    gate = asyncio.Semaphore(window)

    async def one() -> None:
        async with gate:
            reply = await sender.send(bob.idurl, "Data", blob, binary=True, timeout=60)
            assert reply is not None and reply.command == "Ack"

    return await pipelined(one, count)


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


async def main(pings: int, blobs: int, window: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory: Directory = {}
        async with transport_node(Path(tmp), "alice", directory) as alice, \
                transport_node(Path(tmp), "bob", directory) as bob:
            assert alice.transport and bob.transport
            ping_out, ping_back = await wire_sizes(alice, bob.idurl,
                                                   lambda: alice.api("user_ping", user_id=bob.idurl))
            ping = await bench_ping(alice, bob, pings)
            plain_ping = await plain_latency(pings, ping_out, ping_back)
            bob.transport.gateway.inbox = AckInbox()
            sender, blob = alice.transport.gateway, bytes(range(256)) * (BLOB // 256)
            data_out, ack_back = await wire_sizes(
                alice, bob.idurl, lambda: sender.send(bob.idurl, "Data", blob, binary=True, timeout=60))
            plain_before = await plain_throughput(blobs, window, data_out, ack_back)
            packets = await bench_packets(alice, bob, blobs, window)
            bus_path = await bench_bus_path(alice, bob, max(4, blobs // 2), window)
            bus_raw = await bench_bus_raw(alice, bob, blobs, window)
            spool_path = await bench_spool(alice, bob, blobs, window)
            plain_after = await plain_throughput(blobs, window, data_out, ack_back)
    baseline = (plain_before + plain_after) / 2
    ping_p50, plain_p50 = statistics.median(ping), statistics.median(plain_ping)
    return {
        "ping_frames_bytes": f"{ping_out} out, {ping_back} back",
        "ping_p50_ms": round(ping_p50, 3), "ping_p99_ms": round(percentile(ping, 0.99), 3),
        "plain_rtt_p50_ms": round(plain_p50, 3), "plain_rtt_p99_ms": round(percentile(plain_ping, 0.99), 3),
        "ping_p50_vs_plain": round(ping_p50 / plain_p50, 1),
        "data_frames_bytes": f"{data_out} out, {ack_back} back, {window} in flight",
        "plain_4mib_mib_s": f"{baseline:.1f} (first {plain_before:.1f}, last {plain_after:.1f})",
        "packets_4mib_mib_s": round(packets, 1), "packets_vs_plain": round(packets / baseline, 3),
        "bus_path_4mib_mib_s": round(bus_path, 1), "bus_path_vs_plain": round(bus_path / baseline, 3),
        "bus_raw_4mib_mib_s": round(bus_raw, 1), "bus_raw_vs_plain": round(bus_raw / baseline, 3),
        "spool_4mib_mib_s": round(spool_path, 1), "spool_vs_plain": round(spool_path / baseline, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--blobs", type=int, default=40)
    parser.add_argument("--window", type=int, default=4, help="4 MiB messages in flight, baseline included")
    args = parser.parse_args()
    for name, value in asyncio.run(main(args.pings, args.blobs, args.window)).items():
        print(f"{name:24s} {value}")
