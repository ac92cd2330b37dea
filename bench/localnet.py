"""Latency across a real local network, through each node's REST API.

Starts N nodes with identities (`deploy.localnet.up`), writes values to the DHT from one node,
then measures over keep-alive HTTP from every other node:
- `dht_value_get` of values held elsewhere: p50 / p99;
- `user_ping` between node pairs (signed packets over TCP and back): p50 / p99;
- baseline for both, in the same run: `process_health` on the same nodes (gateway only), called
  the same way (one keep-alive HTTP connection per node, one call at a time, interleaved with the
  two measured calls), as a ratio of p50s;
- throughput of 4 MiB payloads from node 1 to node 2: a client on node 1's bus sends a spool file
  through `transport.send_file`, a consumer on node 2's bus is handed a spool file on `inbox.Coin`
  and answers (every hop a separate process, as in a real node; no payload crosses either bus),
  `--window` (4) in flight.
  Baseline in the same run (`bench.transport.plain_throughput`): one keep-alive loopback TCP
  connection from this process to a plain sink in a process of its own (the two transports are
  separate processes too), messages as large as the packet frames node 1 sent (`connections_list`
  byte counters around the first run), `--window` in flight through the same `pipelined` helper,
  each answered by a message as large as the reply frames. Measured run and baseline alternate
  twice (node run, plain run, node run, plain run) and the ratio is of the two means, so drift in
  the load of the host weighs on both sides alike.

Run: .venv/bin/python bench/localnet.py [--nodes 6] [--reads 300] [--blobs 40] [--window 4] [--port-offset 22000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import codec, spool, subjects  # noqa: E402
from common.bus import Bus  # noqa: E402
from common.config_store import ConfigStore  # noqa: E402
from bench.transport import BLOB, pipelined, plain_throughput  # noqa: E402
from deploy import localnet  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402
from bench.stats import percentile  # noqa: E402

OFFSET = 22000
"""Default port offset; every port stays below the ephemeral range (32768+), where a dial can self-connect."""
BENCH_COMMAND = "Coin"
"""A binary packet command no process of a node consumes yet (Data belongs to the storage process)."""


async def _bus(client: NodeClient, name: str) -> Bus:
    port = ConfigStore(client.home.options_file).get("interface/bus/port")
    return await Bus.connect(f"nats://127.0.0.1:{port}", client.home.bus_token(), name)


def link_bytes(client: NodeClient, peer_idurl: str) -> tuple[int, int]:
    """(sent, received) bytes on every link of the node to `peer_idurl`, framing included."""
    links = [link for link in client.ok("connections_list") if link["idurl"] == peer_idurl]
    return sum(link["bytes_sent"] for link in links), sum(link["bytes_received"] for link in links)


async def spool_throughput(sender: NodeClient, receiver: NodeClient, receiver_idurl: str, count: int,
                           window: int = 4) -> float:
    """MiB/s of 4 MiB packets sender -> receiver, acknowledged by a consumer on the receiver's bus."""
    out, into = await _bus(sender, "bench-sender"), await _bus(receiver, "bench-consumer")

    async def on_data(msg: object) -> None:
        body = codec.loads(msg.data)  # type: ignore[attr-defined]
        await msg.respond(codec.dumps({"command": "Ack", "payload": body["payload_size"]}))  # type: ignore[attr-defined]

    sub = await into.nc.subscribe(subjects.inbox(BENCH_COMMAND), queue="bench", cb=on_data)
    await into.nc.flush()
    payload = bytes(range(256)) * (BLOB // 256)
    path = spool.write_new(sender.home.spool, payload, prefix="out")
    request = {"remote_idurl": receiver_idurl, "command": BENCH_COMMAND, "path": str(path), "timeout": 60,
               "payload_sha256": hashlib.sha256(payload).hexdigest()}
    gate = asyncio.Semaphore(window)

    async def one() -> None:
        async with gate:
            reply = await out.call(subjects.internal("transport", "send_file"), request, timeout=65)
            assert reply["command"] == "Ack" and reply["payload"] == BLOB, reply

    try:
        return await pipelined(one, count)
    finally:
        path.unlink()
        await sub.unsubscribe()
        await out.close()
        await into.close()


def timed(conn: http.client.HTTPConnection, secret: str, verb: str, path: str, body: dict | None = None) -> float:
    began = time.perf_counter()
    conn.request(verb, path, body=codec.dumps(body) if body is not None else None,
                 headers={"api_secret": secret, "Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    took = (time.perf_counter() - began) * 1000
    assert response.status == 200, (path, data[:200])
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--blobs", type=int, default=40, help="4 MiB payloads for the throughput run")
    parser.add_argument("--window", type=int, default=4, help="payloads in flight at once (baseline too)")
    parser.add_argument("--port-offset", type=int, default=OFFSET,
                        help="added to every port of the local network (pick one no other run uses)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-localnet-"))
    try:
        doc = localnet.up(root, args.nodes, args.port_offset, identities=True)
        nodes = [NodeClient.from_listing(item) for item in doc["nodes"]]
        writer = nodes[0]
        keys = [f"bench-{i}" for i in range(20)]
        for key in keys:
            deadline = time.monotonic() + 60
            while writer.ok("dht_value_set", key=key, value={"k": key})["write"] != "success":
                assert time.monotonic() < deadline, "DHT write did not succeed"
                time.sleep(0.5)
        conns = {n.name: http.client.HTTPConnection("127.0.0.1", n.api_port) for n in nodes}
        gets, pings, health = [], [], []
        readers = nodes[1:]
        globals_ = [n.ok("identity_get")["global_id"] for n in nodes]
        for i in range(args.reads):
            reader = readers[i % len(readers)]
            conn = conns[reader.name]
            query = urllib.parse.urlencode({"key": keys[i % len(keys)]})
            gets.append(timed(conn, reader.secret, "GET", f"/dht/value/get/v1?{query}"))
            target = globals_[(nodes.index(reader) + 1 + i % (len(nodes) - 1)) % len(nodes)]
            pings.append(timed(conn, reader.secret, "POST", "/user/ping/v1", {"user_id": target, "timeout": 10}))
            health.append(timed(conn, reader.secret, "GET", "/process/health/v1"))
        receiver_idurl = nodes[2].ok("identity_get")["idurl"]
        sent, received = link_bytes(nodes[1], receiver_idurl)
        raw = [asyncio.run(spool_throughput(nodes[1], nodes[2], receiver_idurl, args.blobs, args.window))]
        sent_after, received_after = link_bytes(nodes[1], receiver_idurl)
        frame = (sent_after - sent) // (args.blobs + 1)  # the warm-up packet included
        answer = (received_after - received) // (args.blobs + 1)
        plain = [asyncio.run(plain_throughput(args.blobs, args.window, frame, answer, separate_process=True))]
        raw.append(asyncio.run(spool_throughput(nodes[1], nodes[2], receiver_idurl, args.blobs, args.window)))
        plain.append(asyncio.run(plain_throughput(args.blobs, args.window, frame, answer, separate_process=True)))
    finally:
        localnet.down(root)
        shutil.rmtree(root, ignore_errors=True)
    base = percentile(health, 0.5)
    print(f"{args.nodes} nodes, {args.reads} calls each")
    print(f"{'call':<34} {'p50 ms':>8} {'p99 ms':>8} {'p50 / health':>13}")
    for label, samples in (("process_health (baseline)", health), ("dht_value_get", gets),
                           ("user_ping", pings)):
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"{label:<34} {p50:>8.3f} {p99:>8.3f} {p50 / base:>13.1f}")
    measured, baseline = sum(raw) / len(raw), sum(plain) / len(plain)
    print(f"4 MiB node 1 -> node 2 through the buses and transports, {args.window} in flight, frames "
          f"{frame} B out / {answer} B back: {measured:.0f} MiB/s (runs: {', '.join(f'{r:.0f}' for r in raw)})")
    print(f"plain TCP to a sink process, same frames, {args.window} in flight: {baseline:.0f} MiB/s "
          f"(runs: {', '.join(f'{p:.0f}' for p in plain)}); ratio {measured / baseline:.2f}")


if __name__ == "__main__":
    main()
