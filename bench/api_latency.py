"""API latency, cold start and memory of one real node.

Starts a node under supervisord, then measures:
- cold start: `bitdust start` until every program is healthy;
- 2,000 sequential keep-alive calls of `process_health` (answered by the gateway) and of
  `identity_cache_list` (answered by the identity process over the bus), alternating one of each
  on one connection, so that both see the same moments of this host: p50 / p99; then, once the node
  has an identity, `identity_get` the same way;
- the same client against a bare aiohttp server in this run (the baseline), as a ratio;
- total RSS of the node (supervisord, nats-server and every process), fresh and once it has an identity,
  and its PSS (what the node really takes: pages its processes share, such as libpython, counted once);
- with `--network N`: the RSS of each node of an N-node loopback network in use (every pair pinged,
  a DHT value written and read, a private message sent, node 0's 5 MiB sample stored with two of
  the others as suppliers and read back: `bitdust localnet demo`), per process too, once the
  network has been idle for one `common.memory.INTERVAL`.

Run: .venv/bin/python bench/api_latency.py [--calls 2000] [--network 3]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from common import memory  # noqa: E402
from deploy import localnet, node  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402
from bench.stats import percentile  # noqa: E402

OFFSET = 21000  # every port stays below the ephemeral range (32768+), where a dial can self-connect


def measure(port: int, paths: tuple[str, ...], headers: dict[str, str], calls: int) -> list[list[float]]:
    """`calls` GETs of each path in ms, the paths taking turns on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    samples: list[list[float]] = [[] for _ in paths]
    for _ in range(calls):
        for path, into in zip(paths, samples, strict=True):
            began = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            into.append((time.perf_counter() - began) * 1000)
            assert response.status == 200, response.status
    conn.close()
    return samples


def baseline_server(port: int) -> None:
    async def handle(_: web.Request) -> web.Response:
        return web.json_response({"status": "OK", "execution": "0.000001"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/process/health/v1", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def pss_mb(pids: list[int]) -> float:
    """Proportional set size: each shared page (libpython, libcrypto, uvloop…) counted once in all."""
    return _proc_kib(pids, "smaps_rollup", "Pss:") / 1024


def rss_mb(pids: list[int]) -> float:
    return _proc_kib(pids, "status", "VmRSS:") / 1024


def _proc_kib(pids: list[int], source: str, field: str) -> int:
    """The sum of one kB field of `/proc/<pid>/<source>` over `pids` (a process gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--network", type=int, default=0, help="also measure each node of an N-node network in use")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    localnet.prepare(root, 1, OFFSET)
    home = localnet.NodeHome(root / "node-0")
    try:
        cold = node.start(home, timeout=60)
        client = NodeClient("node-0", home, 8180 + OFFSET, 8280 + OFFSET, home.api_secret())
        headers = {"api_secret": client.secret}
        paths = ("/process/health/v1", "/identity/cache/list/v1")
        measure(client.api_port, paths, headers, 200)  # warm up
        local, bus = measure(client.api_port, paths, headers, args.calls)
        base_port = OFFSET + 8000
        threading.Thread(target=baseline_server, args=(base_port,), daemon=True).start()
        node_deadline = time.monotonic() + 10
        while True:
            try:
                measure(base_port, ("/process/health/v1",), {}, 200)
                break
            except OSError:
                if time.monotonic() > node_deadline:
                    raise
                time.sleep(0.05)
        [base] = measure(base_port, ("/process/health/v1",), {}, args.calls)
        infos = node.supervisor(home).call_sync("getAllProcessInfo")
        pids = [int((home.run / "supervisord.pid").read_text())] + [i["pid"] for i in infos if i["pid"]]
        memory, memory_pss = rss_mb(pids), pss_mb(pids)
        shared = {name: sorted(os.sched_getaffinity(i["pid"])) for name, i in
                  ((i["name"], i) for i in infos) if i["pid"] and name in ("bus", "api")}
        # The same node once it has an identity (keys loaded, identity server serving, network up).
        client.ok("identity_create", username="bench")
        client.ok("network_connected", wait_timeout=30)
        client.ok("identity_get")
        memory_identity, memory_identity_pss = rss_mb(pids), pss_mb(pids)
        # The method the issue measured: identity_get, answered by the identity process over the bus.
        paths = ("/process/health/v1", "/identity/get/v1")
        measure(client.api_port, paths, headers, 200)  # warm up
        local_id, identity_get = measure(client.api_port, paths, headers, args.calls)
    finally:
        node.stop(home)
    print(f"cold start to healthy: {cold:.2f} s (aim <= 1.5 s)")
    print(f"CPUs of the bus and the gateway: {shared} (interface/bus/share-cpu-with-api); event loop: "
          f"{os.environ.get('BITDUST_EVENT_LOOP') or 'uvloop'} (BITDUST_EVENT_LOOP)")
    print(f"{'calls':<40} {'p50 ms':>8} {'p99 ms':>8} {'p50 / baseline':>15}")
    for label, samples in (("bare aiohttp (baseline)", base), ("process_health (gateway)", local),
                           ("identity_cache_list (over the bus)", bus)):
        ratio = statistics.median(samples) / statistics.median(base)
        print(f"{label:<40} {percentile(samples, 0.5):>8.3f} {percentile(samples, 0.99):>8.3f} {ratio:>15.2f}")
    print(f"{'identity_get (over the bus)':<40} {percentile(identity_get, 0.5):>8.3f} "
          f"{percentile(identity_get, 0.99):>8.3f} {statistics.median(identity_get) / statistics.median(base):>15.2f}")
    gap = statistics.median(bus) - statistics.median(local)
    print(f"bus call - process_health at p50: {gap:.3f} ms (aim <= 0.3 ms); identity_get: "
          f"{statistics.median(identity_get) - statistics.median(local_id):.3f} ms")
    print(f"node RSS (supervisord + bus + 6 processes): {memory:.0f} MB fresh, {memory_identity:.0f} MB with an "
          f"identity (aim <= 250 MB)")
    print(f"node PSS (shared pages counted once): {memory_pss:.0f} MB fresh, {memory_identity_pss:.0f} MB with an "
          f"identity")
    if args.network:
        network_rss(args.network)


def node_rss(home: Any) -> tuple[float, float, dict[str, float]]:
    """RSS and PSS of a node, and the RSS of each of its programs."""
    infos = node.supervisor(home).call_sync("getAllProcessInfo")
    pids = [int((home.run / "supervisord.pid").read_text())] + [i["pid"] for i in infos if i["pid"]]
    return rss_mb(pids), pss_mb(pids), {i["name"]: round(rss_mb([i["pid"]]), 1) for i in infos if i["pid"]}


def network_rss(count: int) -> None:
    """RSS of each node of a loopback network in use."""
    root = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    try:
        doc = localnet.up(root, count, OFFSET + 1000, identities=True, timeout=120)
        clients = [NodeClient.from_listing(item) for item in doc["nodes"]]
        gids = [c.ok("identity_get")["global_id"] for c in clients]
        for a, b in itertools.permutations(range(count), 2):
            clients[a].call("user_ping", user_id=gids[b], timeout=10)
        clients[1].ok("dht_value_set", key="bench-rss", value={"n": 1})
        clients[-1].call("dht_value_get", key="bench-rss")
        clients[1].call("message_send", recipient_id=gids[-1], data={"n": 1})
        localnet.storage_demo(root)
        time.sleep(memory.INTERVAL + 1)  # idle between bursts: the freed blocks are given back (common/memory.py)
        for client in clients:
            total, pss, per_process = node_rss(client.home)
            print(f"{client.name} in use: RSS {total:.0f} MB (aim <= 250 MB), PSS {pss:.0f} MB {per_process}")
    finally:
        localnet.down(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
