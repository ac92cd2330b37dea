"""Private message latency between two real nodes, against `user_ping` on the same pair.

Starts a local network (`deploy.localnet.up`, identities on) and uses nodes 1 (sender) and 2
(receiver). Measured through the REST API, each call from its own client:
- baseline: `user_ping` from the sender to the receiver (Identity packet -> Ack), p50 / p99;
- send -> consumed: the receiver long-polls `message_receive` while the sender calls `message_send`;
  the time from the start of `message_send` until the receiver's poll returns the message;
- send -> Ack: how long `message_send` itself takes (sealed, sent, opened, recorded, acknowledged);
- the ratio of each p50 to the ping p50 (aim: send -> consumed under 3x).

Run: .venv/bin/python bench/messaging.py [--count 200] [--nodes 3] [--port-offset 26000] [--keep]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy import localnet  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402

OFFSET = 26000
POLL = 30


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 3), "p99_ms": round(_pct(values, 0.99), 3)}


def bench_ping(sender: NodeClient, receiver_id: str, count: int) -> list[float]:
    sender.ok("user_ping", user_id=receiver_id, timeout=10)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        sender.ok("user_ping", user_id=receiver_id, timeout=10)
        times.append((time.perf_counter() - started) * 1000)
    return times


def bench_messages(sender: NodeClient, receiver: NodeClient, receiver_id: str,
                   count: int) -> tuple[list[float], list[float], int]:
    consumer = "bench-consumer"
    receiver.ok("message_receive", consumer_callback_id=consumer, polling_timeout=0)
    to_consumed, to_ack, consumed = [], [], 0

    def wait_message(message_tag: int) -> float:
        while True:
            items = receiver.ok("message_receive", consumer_callback_id=consumer, polling_timeout=POLL)
            if any(item["data"].get("n") == message_tag for item in items):
                return time.perf_counter()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for n in range(-5, count):  # five warm-up rounds
            poll = pool.submit(wait_message, n)
            started = time.perf_counter()
            result = sender.ok("message_send", recipient_id=receiver_id, data={"n": n, "text": "bench message"})
            acked = time.perf_counter()
            arrived = poll.result(timeout=POLL + 10)
            if not result["delivered"]:
                raise RuntimeError(f"message {n} was not delivered: {result}")
            if n >= 0:
                to_consumed.append((arrived - started) * 1000)
                to_ack.append((acked - started) * 1000)
                consumed += bool(result["consumed"])
    return to_consumed, to_ack, consumed


def run(count: int, nodes: int, offset: int, keep: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-messaging-"))
    try:
        doc = localnet.up(root, nodes, offset, identities=True, timeout=180)
        clients = [NodeClient.from_listing(item) for item in doc["nodes"]]
        sender, receiver = clients[1], clients[2 % len(clients)]
        receiver_id = receiver.ok("identity_get")["global_id"]
        ping = bench_ping(sender, receiver_id, count)
        to_consumed, to_ack, consumed = bench_messages(sender, receiver, receiver_id, count)
        ping_p50 = statistics.median(ping)
        return {
            "count": count,
            "ping": _summary(ping),
            "send_to_consumed": _summary(to_consumed),
            "send_to_ack": _summary(to_ack),
            "consumed_by_waiting_poll": f"{consumed}/{count}",
            "consumed_p50_vs_ping_p50": round(statistics.median(to_consumed) / ping_p50, 2),
            "ack_p50_vs_ping_p50": round(statistics.median(to_ack) / ping_p50, 2),
            "aim": "send -> consumed p50 under 3x the ping p50",
        }
    finally:
        localnet.down(root)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--port-offset", type=int, default=OFFSET)
    parser.add_argument("--keep", action="store_true", help="keep the network folder")
    args = parser.parse_args()
    print(json.dumps(run(args.count, args.nodes, args.port_offset, args.keep), indent=2))


if __name__ == "__main__":
    main()
