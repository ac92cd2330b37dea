"""A flood of signed packets at one node: its event-loop lag, and an honest peer's pings meanwhile.

    .venv/bin/python bench/flood.py [--packets 3000] [--port-offset 25000]

Three real nodes on loopback (`deploy.localnet`): node 0 runs the identity server, node 1 is the
target, node 2 an honest peer. A flooder with an identity of its own (published on node 0's
identity server, so the target can verify it) opens one authenticated TCP link to the target and
writes `--packets` signed `Message` packets as fast as the socket takes them. Each packet is
genuine: the target verifies every signature and hands every packet to its messaging process
(which refuses it: a forged inner message). Measured, each against a same-run baseline taken just
before the flood the same way:
  * `user_ping` round trips from the honest peer to the target through its REST API, one at a
    time: during the flood, pings follow one another from the first packet until the target has
    answered the last, and only pings started by then count (so none of them is idle); the
    baseline is `--pings` pings the same way with no flood, right before it. p50 / p99 and n.
  * the target transport's event-loop lag (`packets_stats.event_loop_lag`: a 100 ms tick, p99 and
    max over its last `SAMPLES` ticks, about a minute). The monitor cannot be reset from outside,
    so the bench waits a full window after the network is up before the idle snapshot (its minute
    holds no start-up work), and the flood snapshot covers the minute that ends when the last packet
    was answered: the same length of window, the flood included. Its p50 is mostly idle ticks
    unless the flood lasts half a minute, so the ratio is taken on p99 and max.
  * packets per second the target admitted and answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import codec, crypto  # noqa: E402
from common import packet as packets  # noqa: E402
from common.loop_lag import INTERVAL, SAMPLES  # noqa: E402
from deploy import localnet  # noqa: E402
from services.identity import document  # noqa: E402
from services.transport.framing import FrameKind  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402
from tests.rawpeer import RawPeer  # noqa: E402
from bench.stats import percentile  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 2)


def _pings(peer: NodeClient, target_id: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        status, doc = peer.call("user_ping", user_id=target_id, timeout=10)
        if status == 200:
            times.append(time.perf_counter() - began)
    return times


def _pings_until(peer: NodeClient, target_id: str, done: threading.Event) -> list[tuple[float, float]]:
    """(start, seconds) of pings made one after another until `done` is set (at least one)."""
    times: list[tuple[float, float]] = []
    while not times or not done.is_set():
        began = time.perf_counter()
        status, doc = peer.call("user_ping", user_id=target_id, timeout=10)
        if status == 200:
            times.append((began, time.perf_counter() - began))
    return times


def _lag(snapshot: dict[str, float]) -> dict[str, float]:
    return {"ticks": snapshot["samples"], "p99_ms": snapshot["p99_ms"], "max_ms": snapshot["max_ms"]}


def _publish_identity(server: str, name: str, port: int) -> tuple[Any, str]:
    key = crypto.generate_private_key(2048)
    doc = document.new_document([f"http://{server}/{name}.xml"], [f"tcp://127.0.0.1:{port}"], key)
    request = urllib.request.Request(f"http://{server}/upload", data=doc.to_xml().encode(), method="POST",
                                     headers={"Content-Type": "text/xml"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()
    return key, doc.idurl


def _signed_packets(key: Any, me: str, target: str, count: int) -> list[bytes]:
    frames = []
    for n in range(count):
        body = codec.dumps({"flood": n, "pad": secrets.token_hex(64)})
        pkt = packets.create("Message", me, target, body, key_id="master$flooder", packet_id=f"f{n}")
        pkt = pkt.hashed(packets.payload_digest(pkt.payload))
        pkt = pkt.signed(crypto.sign(key, packets.signing_digest(pkt, pkt.payload_sha256)))
        frames.append(b"".join(bytes(part) for part in packets.encode(pkt)))
    return frames


async def _flood(port: int, me: str, key: Any, target: str, target_doc: dict[str, Any], frames: list[bytes],
                 answered: threading.Event) -> tuple[float, float]:
    """Write every frame, then read the target's answers until each packet has one; (seconds the
    writes took, `perf_counter` when the last answer came). Sets `answered` then.

    The answers must be read: closing a socket with unread data resets the connection, and the
    target would lose what it had not read yet.
    """
    raw = await RawPeer.open(port)
    await raw.authenticate(me, key, target, target_doc)
    replies = 0

    async def drain() -> None:
        nonlocal replies
        while replies < len(frames):
            await raw.read_frame(timeout=120)
            replies += 1
        answered.set()

    reader = asyncio.ensure_future(drain())
    began = time.perf_counter()
    for frame in frames:
        await raw.frame(FrameKind.PACKET, frame)
    took = time.perf_counter() - began
    try:
        await asyncio.wait_for(reader, 180)
    finally:
        raw.close()
    return took, time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--pings", type=int, default=100)
    parser.add_argument("--port-offset", type=int, default=25000)
    parser.add_argument("--keep", action="store_true", help="leave the network running (and its folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    try:
        doc = localnet.up(root, 3, args.port_offset, identities=True)
        clients = [NodeClient.from_listing(item) for item in doc["nodes"]]
        target, peer = clients[1], clients[2]
        target_me = target.ok("identity_get")
        server = target_me["idurl"].split("/")[2]
        key, me = _publish_identity(server, "flooder", 1)
        print(f"signing {args.packets} packets ...", file=sys.stderr)
        frames = _signed_packets(key, me, target_me["idurl"], args.packets)
        target_port = int(target_me["contacts"][0].rsplit(":", 1)[1])
        fetched = {"publickey": target_me["publickey"]}

        _pings(peer, target_me["global_id"], 10)  # warm the link
        window = SAMPLES * INTERVAL + 5  # ticks come a little late even when idle
        print(f"waiting {window:.0f} s: the lag monitor's window must hold no start-up work ...", file=sys.stderr)
        time.sleep(window)
        before_stats = target.ok("packets_stats")
        idle_pings = _pings(peer, target_me["global_id"], args.pings)
        idle_lag = target.ok("packets_stats")["event_loop_lag"]

        async def run() -> tuple[float, list[float], float]:
            answered = threading.Event()
            began = time.perf_counter()
            flood = asyncio.ensure_future(_flood(target_port, me, key, target_me["idurl"], fetched, frames, answered))
            pings = await asyncio.to_thread(_pings_until, peer, target_me["global_id"], answered)
            written, answered_at = await flood
            return written, [took for started, took in pings if started < answered_at], answered_at - began

        flood_seconds, busy_pings, all_answered = asyncio.run(run())
        busy_lag = target.ok("packets_stats")["event_loop_lag"]
        after = target.ok("packets_stats")["in"]
        report = {
            "packets": args.packets,
            "flood_write_seconds": round(flood_seconds, 2),
            "admitted": int(after["commands"].get("Message", 0))
            - int(before_stats["in"]["commands"].get("Message", 0)),
            "seconds_until_all_answered": round(all_answered, 2),
            "event_loop_lag_idle_minute": _lag(idle_lag),
            "event_loop_lag_minute_with_flood": _lag(busy_lag),
            "lag_p99_ratio": round(busy_lag["p99_ms"] / max(0.01, idle_lag["p99_ms"]), 1),
            "lag_max_ratio": round(busy_lag["max_ms"] / max(0.01, idle_lag["max_ms"]), 1),
            "ping_idle_ms": {"p50": _pct(idle_pings, 0.5), "p99": _pct(idle_pings, 0.99), "n": len(idle_pings)},
            "ping_during_flood_ms": {"p50": _pct(busy_pings, 0.5), "p99": _pct(busy_pings, 0.99),
                                     "n": len(busy_pings)},
            "ping_p50_ratio": round(statistics.median(busy_pings) / statistics.median(idle_pings), 2),
            "answered_per_s": round(args.packets / max(1e-9, all_answered), 1),
        }
        print(json.dumps(report, indent=2))
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            localnet.down(root)
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
