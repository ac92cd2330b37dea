"""The NAT relay's cost: pings and storage between nodes behind NAT, against the same between hosts.

Starts a network of 5 hosts in network namespaces (root needed): node 0 (identity server, DHT seed),
nodes 1 and 2 on the bridge (they relay), nodes 3 and 4 each behind a NAT router of its own
(`localnet up --netns --behind-nat 3,4`). Measured through the REST API, one call at a time:
- relayed pings: node 4 -> node 3. Neither can dial the other, so the request crosses node 3's relay
  and the reply node 4's relay: two extra hops on a round trip;
- the baseline, in alternating rounds: node 2 -> node 1, the same ping between two hosts that dial
  each other directly (same API, same packet sizes, same namespaces);
- relayed storage: node 3 uploads and downloads a file whose fragments go to node 4 (relayed both
  ways) and to one more supplier; the baseline is node 1 doing the same with two bridge suppliers.
Ratios are relayed / direct.

Run: .venv/bin/python bench/relay.py [--pings 200] [--size 8M] [--port-offset 23000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy import localnet, netns  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402
from tests.helpers import sha256_file, wait_for  # noqa: E402
from bench.stats import summary_ms  # noqa: E402

NODES = 5
NATTED = (3, 4)
MIB = 1024 * 1024


def _gid(client: NodeClient) -> str:
    return str(client.ok("identity_get")["global_id"])


def _ping_ms(a: NodeClient, b_gid: str) -> float:
    began = time.perf_counter()
    a.ok("user_ping", user_id=b_gid, timeout=10)
    return (time.perf_counter() - began) * 1000


def _suppliers(customer: NodeClient) -> list[str]:
    items = customer.ok("suppliers_list")
    return [i["idurl"] for i in items] if items and all(i["supplier_state"] == "CONNECTED" for i in items) else []


def _transfer(customer: NodeClient, folder: Path, name: str, size: int) -> tuple[float, float]:
    """(upload MiB/s, download MiB/s) of one file of `size` bytes, checked byte for byte."""
    source = folder / name
    source.write_bytes(os.urandom(size))
    remote = f"master${_gid(customer)}:{name}"
    began = time.perf_counter()
    customer.ok("file_upload_start", local_path=str(source), remote_path=remote, wait_result=True)
    up = time.perf_counter() - began
    began = time.perf_counter()
    got = customer.ok("file_download_start", remote_path=remote, destination_path=str(folder / f"{name}.back"),
                      wait_result=True)
    down = time.perf_counter() - began
    if sha256_file(Path(got["local_path"])) != sha256_file(source):
        raise RuntimeError(f"{name} came back different")
    return size / MIB / up, size / MIB / down


def _hire(customer: NodeClient, supplier: NodeClient) -> None:
    wanted = str(supplier.ok("identity_get")["idurl"])
    wait_for(lambda: len(_suppliers(customer)) == 2, timeout=120, interval=0.5, what="suppliers")
    if wanted not in _suppliers(customer):
        customer.ok("supplier_change", position=0, new_supplier_id=_gid(supplier))
    wait_for(lambda: wanted in _suppliers(customer), timeout=120, interval=0.5, what="the relayed supplier")


def run(pings: int, size: int, offset: int, keep: bool) -> dict[str, Any]:
    why = netns.nat_available()
    if why:
        raise SystemExit(f"bench/relay.py needs NAT routers: {why}")
    root = Path(tempfile.mkdtemp(prefix="bd-relay-"))
    try:
        doc = localnet.up(root, NODES, offset, identities=True, timeout=120, namespaces=True, behind_nat=NATTED)
        c = [NodeClient.from_listing(item) for item in doc["nodes"]]
        for index in NATTED:
            wait_for(lambda i=index: c[i].ok("network_status", proxy=True)["proxy"]["state"] == "CONNECTED",
                     timeout=120, interval=0.5, what=f"node-{index} relayed")
        relayed_to, direct_to = _gid(c[3]), _gid(c[1])
        for _ in range(10):  # warm up: links, identity caches (a stale cached identity is refetched)
            wait_for(lambda: c[4].call("user_ping", user_id=relayed_to, timeout=10)[0] == 200, timeout=60,
                     interval=0.5, what="a relayed ping")
            _ping_ms(c[2], direct_to)
        relayed: list[float] = []
        direct: list[float] = []
        for n in range(pings):  # alternate, so load drift falls on both
            pair = ((relayed, c[4], relayed_to), (direct, c[2], direct_to))
            for samples, client, target in pair if n % 2 == 0 else pair[::-1]:
                samples.append(_ping_ms(client, target))
        _hire(c[3], c[4])
        folder = root / "files"
        folder.mkdir()
        wait_for(lambda: len(_suppliers(c[1])) == 2, timeout=120, interval=0.5, what="node-1's suppliers")
        direct_io = _transfer(c[1], folder, "direct.bin", size)
        relayed_io = _transfer(c[3], folder, "relayed.bin", size)
        return {
            "ping_relayed": summary_ms(relayed),
            "ping_direct": summary_ms(direct),
            "ping_ratio_p50": round(statistics.median(relayed) / statistics.median(direct), 2),
            "storage_mib_s": {"relayed_up": round(relayed_io[0], 1), "relayed_down": round(relayed_io[1], 1),
                              "direct_up": round(direct_io[0], 1), "direct_down": round(direct_io[1], 1)},
            "storage_ratio": {"up": round(relayed_io[0] / direct_io[0], 2),
                              "down": round(relayed_io[1] / direct_io[1], 2)},
            "size_mib": size / MIB, "pings": pings,
        }
    finally:
        if keep:
            print(f"kept {root}; stop with: bitdust localnet down --dir {root}", file=sys.stderr)
        else:
            localnet.down(root)
            shutil.rmtree(root, ignore_errors=True)


def _size(text: str) -> int:
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--size", type=_size, default=8 * MIB)
    parser.add_argument("--port-offset", type=int, default=23000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.pings, args.size, args.port_offset, args.keep), indent=2))


if __name__ == "__main__":
    main()
