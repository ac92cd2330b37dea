"""Ledger latency on a real local network: a transfer sent -> seen by the recipient -> in a block.

Starts a local network (`deploy.localnet.up`, identities on: node 0 is the foundation miner and
every node gets its bonus), then in `--count` rounds node 1 sends node 2 a small amount with an
`operation` and `data`, through the REST API. Each round, one transfer at a time:
- send: the `blockchain_transaction_send` call (build, fund, sign, broadcast);
- seen: from the start of the send until node 2's ledger announces it (`blockchain-transaction-received`,
  read by a long poll of `event_listen` waiting in a thread of its own);
- in a block: from the start of the send until node 2's engine reports it confirmed (the foundation
  miner produces a block for what waits in its pool), polled over node 2's RPC every 5 ms;
- baseline: a `getblockcount` JSON-RPC round trip to node 2's engine in the same run (cookie auth,
  a new connection each call, as the ledger process makes them).
Then the resident memory of every node's engine (`ledgerd`) and ledger process.

Run: .venv/bin/python bench/ledger.py [--count 50] [--nodes 3] [--port-offset 27000] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import summary_ms  # noqa: E402
from common import ledger_engine  # noqa: E402
from common.config_store import ConfigStore  # noqa: E402
from common.home import NodeHome  # noqa: E402
from deploy import localnet  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402

OFFSET = 27000
LISTENER = "bench-ledger"


def rpc(home: NodeHome, method: str, *params: Any, wallet: bool = False) -> Any:
    """One JSON-RPC call to a node's engine, authenticated by its cookie."""
    port = ConfigStore(home.options_file).get(ledger_engine.RPC_PORT_OPTION)
    auth = base64.b64encode(ledger_engine.cookie_file(home).read_bytes().strip()).decode()
    path = f"/wallet/{ledger_engine.WALLET_NAME}" if wallet else "/"
    body = json.dumps({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["result"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Arrivals:
    """Node 2's `blockchain-transaction-received` events, by transaction id, with the time each arrived."""

    def __init__(self, client: NodeClient):
        self.client = client
        self.seen: dict[str, float] = {}
        self.stopped = threading.Event()
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            status, doc = self.client.call("event_listen", consumer_callback_id=LISTENER)
            now = time.perf_counter()
            if status != 200:
                continue
            with self.changed:
                for event in doc["result"]:
                    if event["event_id"] == "blockchain-transaction-received":
                        self.seen.setdefault(event["data"]["transaction_id"], now)
                self.changed.notify_all()

    def wait(self, txid: str, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        with self.changed:
            while txid not in self.seen:
                if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{txid} not seen by the recipient")
            return self.seen[txid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--port-offset", type=int, default=OFFSET)
    parser.add_argument("--keep", action="store_true", help="leave the network running")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    try:
        doc = localnet.up(root, args.nodes, args.port_offset, identities=True, timeout=180)
        clients = [NodeClient.from_listing(item) for item in doc["nodes"]]
        sender, recipient = clients[1], clients[2]
        recipient_home = NodeHome(Path(doc["nodes"][2]["home"]))
        address = doc["ledger"]["addresses"][2]
        arrivals = Arrivals(recipient)
        time.sleep(0.5)  # let the long poll register before the first transfer (not a synchronisation)
        sends, seens, blocks, rpcs = [], [], [], []
        for round_ in range(args.count + 3):
            began = time.perf_counter()
            rpc(recipient_home, "getblockcount")
            rpc_time = time.perf_counter() - began
            began = time.perf_counter()
            status, reply = sender.call("blockchain_transaction_send", recipient=address, amount="0.001",
                                        operation="bench", data=f"round {round_}")
            sent = time.perf_counter()
            assert status == 200, reply
            txid = reply["result"]["transaction_id"]
            seen = arrivals.wait(txid)
            while int(rpc(recipient_home, "gettransaction", txid, wallet=True).get("confirmations", 0)) < 1:
                time.sleep(0.005)
            confirmed = time.perf_counter()
            if round_ < 3:
                continue  # warm-up
            rpcs.append(rpc_time * 1000)
            sends.append((sent - began) * 1000)
            seens.append((seen - began) * 1000)
            blocks.append((confirmed - began) * 1000)
        arrivals.stopped.set()
        memory = {}
        for client in clients:
            pids = {p["name"]: p["pid"] for p in client.ok("process_info")["processes"]}
            memory[client.name] = {"ledgerd_mb": rss_mb(pids["ledgerd"]), "ledger_mb": rss_mb(pids["ledger"])}
        print(json.dumps({
            "rounds": args.count, "nodes": args.nodes,
            "getblockcount_rpc": summary_ms(rpcs),
            "send": summary_ms(sends), "sent_to_seen": summary_ms(seens), "sent_to_block": summary_ms(blocks),
            "rss_mb": memory,
        }, indent=1))
    finally:
        if not args.keep:
            localnet.down(root)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
