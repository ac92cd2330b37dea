"""Latency across a real local network, through each node's REST API.

Starts N nodes with identities (`deploy.localnet.up`), writes values to the DHT from one node,
then measures over keep-alive HTTP from every other node:
- `dht_value_get` of values held elsewhere: p50 / p99;
- `user_ping` between node pairs (signed packets over TCP and back): p50 / p99;
- baseline in the same run: `process_health` on the same nodes (gateway only), as a ratio.

Run: .venv/bin/python bench/localnet.py [--nodes 6] [--reads 300]
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import codec  # noqa: E402
from deploy import localnet  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402

OFFSET = 26000


def timed(conn: http.client.HTTPConnection, secret: str, verb: str, path: str, body: dict | None = None) -> float:
    began = time.perf_counter()
    conn.request(verb, path, body=codec.dumps(body) if body is not None else None,
                 headers={"api_secret": secret, "Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    took = (time.perf_counter() - began) * 1000
    assert response.status == 200, (path, data[:200])
    return took


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-localnet-"))
    try:
        doc = localnet.up(root, args.nodes, OFFSET, identities=True)
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
    finally:
        localnet.down(root)
    base = pct(health, 0.5)
    print(f"{args.nodes} nodes, {args.reads} calls each")
    print(f"{'call':<34} {'p50 ms':>8} {'p99 ms':>8} {'p50 / health':>13}")
    for label, samples in (("process_health (baseline)", health), ("dht_value_get", gets),
                           ("user_ping", pings)):
        print(f"{label:<34} {pct(samples, 0.5):>8.3f} {pct(samples, 0.99):>8.3f} {pct(samples, 0.5) / base:>13.1f}")


if __name__ == "__main__":
    main()
