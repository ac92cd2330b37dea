"""Private message latency between two real nodes, against `user_ping` on the same pair.

Starts a local network (`deploy.localnet.up`, identities on) and uses nodes 1 (sender) and 2
(receiver). Measured through the REST API, each call from its own client, in `--count` rounds
(after six warm-up rounds). The receiver polls `message_receive` in a thread of its own, again as
soon as a poll returns, so a long poll is nearly always waiting. Each round, one call at a time:
- baseline: `user_ping` from the sender to the receiver (Identity packet -> Ack), one REST call;
- send -> Ack: how long `message_send` takes (sealed, sent, opened, recorded, acknowledged):
  one REST call by the same client, one packet each way, as the ping;
- send -> consumed: the time from the start of `message_send` until the receiver's long poll of
  `message_receive` returns the message;
- the ratio of each p50 to the ping p50 (aim: send -> consumed under 3x).
Ping and message come from the same client (a new HTTP connection per call for both), each with
the receiver's poll waiting, in alternating order (ping then message, then message then ping), so
both are taken under the same load of the host and each follows a ping as often as a message; the
sizes differ (a sealed message against a small ping) and that is part of what the ratio shows.

Groups (`--mode group` or `all`, 7 nodes): node 1 creates a group, waits for its brokers to be
hired through the DHT, shares it with 4 more nodes (not its brokers when there are enough nodes)
and all 5 join; every member long-polls `message_receive` (direction all) in its own thread.
- send -> last member: one `message_send_group` at a time (senders alternate between two
  members), the time from the start of the send until the last of the 5 members has it, p50/p99;
- throughput: `--burst` messages sent by `--senders` members at once (2 by default), as fast as
  the API takes them;
  messages/s delivered to all members = burst / (last arrival at the last member - first send).
The group figures have no same-run baseline (nothing else in a node fans one message out to five
members through brokers); read them as absolute figures.

Run: .venv/bin/python bench/messaging.py [--mode all|private|group] [--count 200] [--burst 200]
     [--senders 2] [--nodes 7] [--port-offset 26000] [--keep]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy import localnet  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402
from bench.stats import summary_ms  # noqa: E402

OFFSET = 26000
POLL = 30


GROUP_MEMBERS = 5
SETUP_TIMEOUT = 300


class Arrivals:
    """Each member's long-poll thread records when every message `n` reached it.

    A member polls again as soon as a poll returns, so a poll is nearly always waiting."""

    def __init__(self, members: list[NodeClient], consumer: str = "bench-group", direction: str = "all",
                 message_types: str = "group_message"):
        self.members = members
        self.poll_args = {"consumer_callback_id": consumer, "direction": direction, "message_types": message_types}
        self.seen: dict[int, dict[str, float]] = {}
        self.cond = threading.Condition()
        self.stop = False
        self.threads = [threading.Thread(target=self._poll, args=(m,), daemon=True) for m in members]

    def start(self) -> None:
        for member in self.members:
            member.ok("message_receive", polling_timeout=0, **self.poll_args)
        for thread in self.threads:
            thread.start()

    def _poll(self, member: NodeClient) -> None:
        while not self.stop:
            items = member.ok("message_receive", polling_timeout=5, **self.poll_args)
            now = time.perf_counter()
            with self.cond:
                for item in items:
                    n = item["data"].get("n")
                    if isinstance(n, int):
                        self.seen.setdefault(n, {}).setdefault(member.name, now)
                self.cond.notify_all()

    def wait_all(self, numbers: list[int], timeout: float = 120) -> float:
        """The time the last member got the last of `numbers`."""
        deadline = time.perf_counter() + timeout
        with self.cond:
            while not all(len(self.seen.get(n, {})) == len(self.members) for n in numbers):
                left = deadline - time.perf_counter()
                if left <= 0:
                    missing = [n for n in numbers if len(self.seen.get(n, {})) < len(self.members)]
                    raise RuntimeError(f"messages {missing[:5]} did not reach every member")
                self.cond.wait(left)
            return max(max(self.seen[n].values()) for n in numbers)


def bench_rounds(sender: NodeClient, receiver: NodeClient, receiver_id: str,
                 count: int) -> tuple[list[float], list[float], list[float], int]:
    """(ping, send -> consumed, send -> Ack) in ms and how many were consumed by the waiting poll.

    Each round makes one ping and sends one message, while the receiver keeps a long poll waiting;
    the order alternates (ping first in even rounds, message first in odd ones), so each kind
    follows a ping as often as a message and inherits the same leftover work."""
    arrivals = Arrivals([receiver], "bench-consumer", "incoming", "private_message")
    arrivals.start()
    pings, to_consumed, to_ack, consumed = [], [], [], 0

    def ping() -> float:
        began = time.perf_counter()
        sender.ok("user_ping", user_id=receiver_id, timeout=10)
        return (time.perf_counter() - began) * 1000

    def message(n: int) -> tuple[float, float, bool]:
        began = time.perf_counter()
        result = sender.ok("message_send", recipient_id=receiver_id, data={"n": n, "text": "bench message"})
        acked = time.perf_counter()
        if not result["delivered"]:
            raise RuntimeError(f"message {n} was not delivered: {result}")
        arrived = arrivals.wait_all([n], timeout=POLL)
        return (arrived - began) * 1000, (acked - began) * 1000, bool(result["consumed"])

    try:
        for n in range(-6, count):  # six warm-up rounds
            if n % 2 == 0:
                took = ping()
                until_consumed, until_ack, by_poll = message(n)
            else:
                until_consumed, until_ack, by_poll = message(n)
                took = ping()
            if n >= 0:
                pings.append(took)
                to_consumed.append(until_consumed)
                to_ack.append(until_ack)
                consumed += by_poll
    finally:
        arrivals.stop = True
    return pings, to_consumed, to_ack, consumed


def _gid(client: NodeClient) -> str:
    return str(client.ok("identity_get")["global_id"])


def setup_group(clients: list[NodeClient]) -> tuple[str, list[NodeClient], list[str]]:
    creator = clients[1]
    group = creator.ok("group_create", label="bench group")["group_key_id"]
    creator.ok("group_join", group_key_id=group)
    deadline = time.monotonic() + SETUP_TIMEOUT
    records: list[dict[str, Any]] = []
    while len(records) < 2:  # brokers show up on the DHT layer a while after the identities exist
        if time.monotonic() > deadline:
            raise RuntimeError(f"brokers not hired: {records}")
        time.sleep(1)
        records = creator.ok("group_info_dht", group_creator_id=_gid(creator))
    brokers = [r["broker_idurl"] for r in records]
    by_idurl = {c.ok("identity_get")["idurl"]: c for c in clients}
    others = [c for i, c in by_idurl.items() if c is not creator and i not in brokers]
    others += [c for i, c in by_idurl.items() if c is not creator and i in brokers]
    members = [creator, *others[:GROUP_MEMBERS - 1]]
    for member in members[1:]:
        creator.ok("group_share", group_key_id=group, trusted_user_id=_gid(member))
        member.ok("group_join", group_key_id=group)
    for member in members:
        while member.ok("group_info", group_key_id=group)["state"] != "CONNECTED":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{member.name} did not connect to the group")
            time.sleep(0.5)
    return group, members, brokers


def bench_group(clients: list[NodeClient], count: int, burst: int, senders_count: int = 2) -> dict[str, Any]:
    group, members, brokers = setup_group(clients)
    arrivals = Arrivals(members)
    arrivals.start()
    senders = members[:2]
    burst_senders = members[:max(1, min(senders_count, len(members)))]
    to_last, to_ack = [], []
    try:
        for n in range(-5, count):  # five warm-up rounds
            started = time.perf_counter()
            senders[n % 2].ok("message_send_group", group_key_id=group, data={"n": n, "text": "bench group message"})
            acked = time.perf_counter()
            last = arrivals.wait_all([n])
            if n >= 0:
                to_last.append((last - started) * 1000)
                to_ack.append((acked - started) * 1000)
        numbers = list(range(10**6, 10**6 + burst))

        def send_share(sender: NodeClient, share: list[int]) -> None:
            for n in share:
                sender.ok("message_send_group", group_key_id=group, data={"n": n, "text": "bench burst"})

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(burst_senders)) as pool:
            jobs = [pool.submit(send_share, s, numbers[i::len(burst_senders)]) for i, s in enumerate(burst_senders)]
            for job in jobs:
                job.result()
        sent = time.perf_counter()
        last = arrivals.wait_all(numbers, timeout=300)
    finally:
        arrivals.stop = True
    seconds = last - started
    return {
        "members": len(members), "nodes": len(clients), "brokers": len(brokers),
        "members_are_brokers": sum(1 for m in members if m.ok("identity_get")["idurl"] in brokers),
        "count": count,
        "send_to_last_member": summary_ms(to_last),
        "send_to_ack": summary_ms(to_ack),
        "burst": {"messages": burst, "senders": len(burst_senders), "send_seconds": round(sent - started, 3),
                  "seconds_until_all_members_had_all": round(seconds, 3),
                  "messages_per_s_delivered_to_all": round(burst / seconds, 1),
                  "deliveries_per_s": round(burst * len(members) / seconds, 1)},
    }


def run(count: int, nodes: int, offset: int, keep: bool, mode: str = "private", burst: int = 200,
        senders: int = 2) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-messaging-"))
    try:
        doc = localnet.up(root, nodes, offset, identities=True, timeout=180)
        clients = [NodeClient.from_listing(item) for item in doc["nodes"]]
        report: dict[str, Any] = {}
        if mode in ("private", "all"):
            report["private"] = bench_private(clients, count)
        if mode in ("group", "all"):
            report["group"] = bench_group(clients, count, burst, senders)
        return report
    finally:
        localnet.down(root)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def bench_private(clients: list[NodeClient], count: int) -> dict[str, Any]:
    sender, receiver = clients[1], clients[2 % len(clients)]
    receiver_id = receiver.ok("identity_get")["global_id"]
    ping, to_consumed, to_ack, consumed = bench_rounds(sender, receiver, receiver_id, count)
    ping_p50 = statistics.median(ping)
    return {
        "count": count,
        "ping": summary_ms(ping),
        "send_to_consumed": summary_ms(to_consumed),
        "send_to_ack": summary_ms(to_ack),
        "consumed_by_waiting_poll": f"{consumed}/{count}",
        "consumed_p50_vs_ping_p50": round(statistics.median(to_consumed) / ping_p50, 2),
        "ack_p50_vs_ping_p50": round(statistics.median(to_ack) / ping_p50, 2),
        "aim": "send -> consumed p50 under 3x the ping p50",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("all", "private", "group"), default="all")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--burst", type=int, default=200, help="group messages sent at once for the throughput")
    parser.add_argument("--senders", type=int, default=2, help="members sending the group burst at once")
    parser.add_argument("--nodes", type=int, default=None, help="3 for private only, else 7")
    parser.add_argument("--port-offset", type=int, default=OFFSET)
    parser.add_argument("--keep", action="store_true", help="keep the network folder")
    args = parser.parse_args()
    nodes = args.nodes or (3 if args.mode == "private" else 7)
    print(json.dumps(run(args.count, nodes, args.port_offset, args.keep, args.mode, args.burst, args.senders),
                     indent=2))


if __name__ == "__main__":
    main()
