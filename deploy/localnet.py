"""Many complete nodes on one host: `bitdust localnet up/down`.

Node i gets its own home `DIR/node-i`, supervisord, bus and ports (each base port + i, all
shifted by `port_offset`). Node 0 also runs the identity server and is the DHT seed; every node
gets a network configuration `localnet` that points at them.

By default every node listens on loopback. With `netns=True` each node is a separate host: its own
Linux network namespace and address on a bridge (`deploy.netns`), listening on all its interfaces
and advertising its address; its API and bus stay on the namespace's own loopback, reached from a
thread inside the namespace. `localnet.json` records the namespaces; `down` removes them.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from common import codec, network_config
from common.config_store import ConfigStore
from common.fsutil import atomic_write
from common.home import NodeHome
from deploy import netns, node

NETWORK_NAME = "localnet"

# option key -> base port; node i uses base + offset + i
PORTS = {
    "interface/api/rest-http-port": 8180,
    "interface/api/web-socket-port": 8280,
    "interface/bus/port": 8380,
    "services/tcp-connections/tcp-port": 7771,
    "services/entangled-dht/udp-port": 14441,
    "services/udp-datagrams/udp-port": 8882,
    # The blockchain engine's (ledgerd) peer and RPC ports: bases of their own, shifted like the others.
    "services/bismuth-node/p2p-port": 8480,
    "services/bismuth-node/rpc-port": 8580,
}
ID_SERVER_PORT = 8084
LISTEN_HOST_OPTIONS = ("services/tcp-connections/listen-host", "services/entangled-dht/listen-host",
                       "services/identity-server/listen-host", "services/bismuth-node/listen-host")
P2P_PORT = "services/bismuth-node/p2p-port"
FIRST_BLOCKS = 101
"""Blocks node 0 mines first: a coinbase pays only after 100 more blocks, so 101 make the first spendable."""
REGISTRATION_BONUS = "10"


def node_ports(index: int, offset: int) -> dict[str, int]:
    return {key: base + offset + index for key, base in PORTS.items()}


def busy_ports(count: int, offset: int) -> list[int]:
    """TCP ports the network would listen on that something else holds now."""
    wanted = [port for index in range(count) for key, port in node_ports(index, offset).items()
              if key != "services/entangled-dht/udp-port" and key != "services/udp-datagrams/udp-port"]
    wanted.append(ID_SERVER_PORT + offset)
    return [port for port in wanted if _tcp_port_busy(port)]


def _tcp_port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _network(offset: int, layout: netns.Layout | None = None, count: int = 1,
             index: int = 0) -> network_config.NetworkConfig:
    seed_ports = node_ports(0, offset)
    seed = layout.address(0) if layout else "127.0.0.1"
    return network_config.NetworkConfig(
        NETWORK_NAME,
        identity_servers=[f"{seed}:{ID_SERVER_PORT + offset}"],
        dht_seeds=[f"{seed}:{seed_ports['services/entangled-dht/udp-port']}"],
        # Node 0's engine dials every other and every other dials node 0's: each engine then has an inbound
        # link, the only kind it relays a transaction on at once (whitelisted; an outbound link waits 2 s on
        # average), and a transfer crosses two links through node 0.
        ledger_seeds=[f"{layout.address(i) if layout else '127.0.0.1'}:{node_ports(i, offset)[P2P_PORT]}"
                      for i in (range(1, count) if index == 0 else [0])],
    )


def subnet_for(offset: int) -> int:
    """The `10.77.<n>.0/24` subnet of a namespaced network: one per port offset, so two can coexist."""
    return (offset // 1000) % 200 + 1


def prepare_node(root: Path, index: int, offset: int = 0, layout: netns.Layout | None = None,
                 count: int = 1) -> dict[str, Any]:
    """Create (or refresh) the home and config of node `index`; its `localnet.json` entry."""
    home = NodeHome(root / f"node-{index}")
    home.ensure()
    ports = node_ports(index, offset)
    options: dict[str, Any] = dict(ports)
    options["services/network/selected"] = NETWORK_NAME
    entry: dict[str, Any] = {}
    if layout is None:
        # A loopback network: every listener on 127.0.0.1, which is also the address nodes advertise.
        for key in LISTEN_HOST_OPTIONS:
            options[key] = "127.0.0.1"
        (home.run / "netns").unlink(missing_ok=True)
    else:
        # A host of its own: listen everywhere, advertise the bridge address. A node behind NAT
        # knows no address to advertise: it finds out it cannot be dialled and gets a relay.
        for key in LISTEN_HOST_OPTIONS:
            options[key] = "0.0.0.0"
        entry = {"netns": layout.namespace(index), "address": layout.address(index),
                 "api_access": "a thread inside the namespace (setns), see deploy/netns.py"}
        if index in layout.nat:
            options["services/tcp-connections/external-host"] = ""
            options["services/proxy-server/enabled"] = False
            entry.update(behind_nat=True, router=layout.router(index), public_address=layout.public_address(index))
        else:
            options["services/tcp-connections/external-host"] = layout.address(index)
        if layout.nat and index == 0:
            options["services/proxy-server/enabled"] = False  # keeps to its identity-server and seed roles
        atomic_write(home.run / "netns", layout.namespace(index))
        # Engines of the other namespaces relay to this one at once, as on loopback.
        options["services/bismuth-node/whitelist"] = f"127.0.0.1,10.77.{layout.subnet}.0/24,192.168.0.0/16"
    roles = []
    if index == 0:
        options["services/identity-server/enabled"] = True
        options["services/identity-server/web-port"] = ID_SERVER_PORT + offset
        options["services/identity-server/host"] = layout.address(0) if layout else "127.0.0.1"
        roles = ["id-server", "dht-seed"]
    ConfigStore(home.options_file).set_many(options)
    network_config.save(home.networks_dir, _network(offset, layout, max(count, index + 1), index))
    return {
        "name": f"node-{index}", "home": str(home.root),
        "api_port": ports["interface/api/rest-http-port"], "ws_port": ports["interface/api/web-socket-port"],
        "api_secret": home.api_secret(), "roles": roles, **entry,
    }


def prepare(root: Path, count: int, offset: int = 0, layout: netns.Layout | None = None) -> list[dict[str, Any]]:
    """Create (or refresh) the homes and configs of `count` nodes under `root`."""
    return [prepare_node(root, index, offset, layout, count) for index in range(count)]


def add(root: Path, timeout: float = 120) -> dict[str, Any]:
    """Start one more node (no identity yet) in the running network of `DIR/localnet.json`."""
    root = root.resolve()
    listing = root / "localnet.json"
    doc = codec.loads(listing.read_bytes())
    offset = int(doc.get("port_offset") or 0)
    index = len(doc["nodes"])
    made = doc.get("netns")
    layout = None
    if made:
        layout = netns.Layout(int(made["subnet"]), index + 1, tuple(made.get("nat") or ()))
        made["count"] = index + 1
        atomic_write(listing, codec.dumps(doc))
        netns.create(layout, range(index, index + 1))
        if made.get("netem"):
            netns.netem(layout, *made["netem"])
    else:
        wanted = [port for key, port in node_ports(index, offset).items() if not key.endswith("udp-port")]
        busy = [port for port in wanted if _tcp_port_busy(port)]
        if busy:
            raise RuntimeError(f"ports already in use: {busy}")
    entry = prepare_node(root, index, offset, layout)
    doc["nodes"].append(entry)
    atomic_write(listing, codec.dumps(doc))
    # Node 0's engine dials the new one too (its ledger reads the seeds again within seconds).
    seed_home = NodeHome(Path(doc["nodes"][0]["home"]))
    seed_network = network_config.load(seed_home.networks_dir, NETWORK_NAME)
    seed_network.ledger_seeds = _network(offset, layout, index + 1, 0).ledger_seeds
    network_config.save(seed_home.networks_dir, seed_network)
    node.start(NodeHome(Path(entry["home"])), wait=True, timeout=timeout)
    return entry


def up(root: Path, count: int, offset: int = 0, identities: bool = False, timeout: float = 120,
       namespaces: bool = False, netem: tuple[float, float] | None = None,
       behind_nat: tuple[int, ...] = ()) -> dict[str, Any]:
    """Start `count` nodes and return the `localnet.json` document once every node is healthy.

    `namespaces` puts each node in a network namespace of its own; `netem` (delay ms, loss %) then
    adds WAN conditions on every node's link, and the nodes listed in `behind_nat` sit behind NAT
    routers (node 0, the identity server and DHT seed, cannot).
    """
    if count < 1:
        raise ValueError("a local network needs at least one node")
    if behind_nat and not namespaces:
        raise ValueError("nodes behind NAT need namespaces (--netns)")
    if any(not 0 < index < count for index in behind_nat):
        raise ValueError(f"nodes behind NAT must be among 1..{count - 1}")
    root = root.resolve()
    highest = max(node_ports(count - 1, offset).values())
    if highest > 65535:
        raise ValueError(f"--port-offset {offset} puts ports past 65535")
    layout = netns.Layout(subnet_for(offset), count, tuple(sorted(set(behind_nat)))) if namespaces else None
    busy = [] if layout else busy_ports(count, offset)
    if busy:
        raise RuntimeError(f"ports already in use: {busy[:10]} (another node or local network? "
                           f"`bitdust localnet down --dir DIR` or choose --port-offset)")
    root.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"network": NETWORK_NAME, "port_offset": offset, "nodes": []}
    if layout is not None:
        doc["netns"] = {"subnet": layout.subnet, "count": count, "bridge": layout.bridge,
                        "netem": list(netem) if netem else None, "nat": list(layout.nat)}
        atomic_write(root / "localnet.json", codec.dumps(doc))  # recorded first: `down` undoes a failed setup
        netns.create(layout)
        if netem:
            netns.netem(layout, *netem)
    nodes = prepare(root, count, offset, layout)
    doc["nodes"] = nodes
    atomic_write(root / "localnet.json", codec.dumps(doc))
    began = time.monotonic()
    homes = [NodeHome(Path(n["home"])) for n in nodes]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, count)) as pool:
        list(pool.map(lambda h: node.start(h, wait=False), homes))
        list(pool.map(lambda h: node.wait_healthy(h, timeout), homes))
    if identities:
        for index, home in enumerate(homes):
            status, reply = node.call_api(home, "POST", "/identity/create/v1", {"username": f"node-{index}"},
                                          timeout=120)
            if status != 200:
                raise RuntimeError(f"identity_create on node-{index} failed: {reply}")
            nodes[index]["idurl"] = reply.get("result", {}).get("idurl")
        atomic_write(root / "localnet.json", codec.dumps(doc))
        if node.ENGINE_PROGRAMS:
            try:
                doc["ledger"] = ledger_foundation(root, timeout)
            except (RuntimeError, TimeoutError, OSError) as err:
                # The rest of the network works without coins: say so rather than fail the whole network.
                doc["ledger"] = {"error": str(err)}
                print(f"localnet: the ledger was not set up: {err}", file=sys.stderr)
    doc["started_in"] = round(time.monotonic() - began, 3)
    return doc


def _api_ok(home: NodeHome, verb: str, route: str, body: dict[str, Any] | None = None) -> Any:
    status, reply = node.call_api(home, verb, route, body, timeout=60)
    if status != 200:
        raise RuntimeError(f"{verb} {route} on {home.root.name} answered {status}: {reply}")
    return reply["result"]


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (RuntimeError, OSError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g}s")
        time.sleep(0.1)


def ledger_foundation(root: Path, timeout: float = 120, count: int | None = None) -> dict[str, Any]:
    """Make node 0 the network's foundation miner and give every other node its registration bonus.

    Every node needs its identity (its wallet key is derived from it). Node 0's address goes into
    every node's network configuration as the one foundation miner; node 0 mines the first blocks
    (a coinbase pays only after 100 more); each other node without coins gets `REGISTRATION_BONUS`
    with `operation="bonus"`, which node 0 then mines at once (it produces for what waits in its pool).
    Run again, it gives no second bonus. `count` limits it to the first nodes of the listing (nodes
    added later with `add` may have no identity, or be stopped).
    """
    root = root.resolve()
    listed = codec.loads((root / "localnet.json").read_bytes())["nodes"]
    homes = [NodeHome(Path(n["home"])) for n in listed[:count]]
    addresses = [
        _wait(f"{home.root.name}'s wallet",
              lambda home=home: _api_ok(home, "GET", "/blockchain/wallet/balance/v1")["address"], timeout)
        for home in homes]
    for home in homes:
        network = network_config.load(home.networks_dir, NETWORK_NAME)
        network.foundation_miners = [addresses[0]]
        network_config.save(home.networks_dir, network)
    seed = homes[0]
    wanted = FIRST_BLOCKS + len(homes)
    while _api_ok(seed, "GET", "/blockchain/info/v1")["node"]["blocks"] < wanted:
        _api_ok(seed, "GET", "/blockchain/block/produce/v1")
    for home in homes[1:]:
        _wait(f"{home.root.name}'s engine at block {wanted}",
              lambda home=home: _api_ok(home, "GET", "/blockchain/info/v1")["node"]["blocks"] >= wanted, timeout)
    bonuses = {}
    for home, address in zip(homes[1:], addresses[1:], strict=True):
        balance = _api_ok(home, "GET", "/blockchain/wallet/balance/v1")
        if balance["balance"] or balance["unconfirmed"]:
            continue
        sent = _api_ok(seed, "POST", "/blockchain/transaction/send/v1",
                       {"recipient": address, "amount": REGISTRATION_BONUS, "operation": "bonus"})
        bonuses[home.root.name] = sent["transaction_id"]
    for home in homes[1:]:
        _wait(f"{home.root.name}'s bonus in a block",
              lambda home=home: _api_ok(home, "GET", "/blockchain/wallet/balance/v1")["balance"] > 0, timeout)
    return {"foundation": addresses[0], "addresses": addresses, "bonuses": bonuses}


def down(root: Path) -> list[str]:
    """Stop every node listed in `DIR/localnet.json` (and any `node-*` home under it)."""
    root = root.resolve()
    homes: list[Path] = []
    listing = root / "localnet.json"
    if listing.exists():
        homes = [Path(n["home"]) for n in codec.loads(listing.read_bytes()).get("nodes", [])]
    homes += [p for p in sorted(root.glob("node-*")) if p not in homes]
    stopped = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for home, was_running in zip(homes, pool.map(lambda h: node.stop(NodeHome(h)), homes), strict=True):
            if was_running:
                stopped.append(home.name)
    made = codec.loads(listing.read_bytes()).get("netns") if listing.exists() else None
    if made:
        netns.destroy(netns.Layout(int(made["subnet"]), int(made["count"]), tuple(made.get("nat") or ())))
    return stopped


def storage_demo(root: Path, timeout: float = 120) -> dict[str, Any]:
    """Store a sample file from node 0 with its suppliers, get it back, and compare.

    Node 0 hires `services/customer/suppliers-number` suppliers among the other nodes (2 by
    default, so a 3-node network is enough), uploads a 5 MiB sample under its master key, downloads
    it into `DIR/demo/` and checks that the bytes are the same. Raises `RuntimeError` on failure.
    """
    root = root.resolve()
    listing = codec.loads((root / "localnet.json").read_bytes())
    home = NodeHome(Path(listing["nodes"][0]["home"]))
    deadline = time.monotonic() + timeout
    suppliers: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, reply = node.call_api(home, "GET", "/supplier/list/v1")
        suppliers = reply.get("result") or [] if status == 200 else []
        if suppliers and all(s.get("supplier_state") == "CONNECTED" for s in suppliers):
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"node-0 did not hire its suppliers in {timeout:.0f}s: {suppliers}")
    status, me = node.call_api(home, "GET", "/identity/get/v1")
    if status != 200:
        raise RuntimeError(f"node-0 has no identity: {me}")
    demo = root / "demo"
    demo.mkdir(exist_ok=True)
    sample = demo / "sample.bin"
    sample.write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    remote = f"master${me['result']['global_id']}:demo/sample.bin"
    began = time.monotonic()
    status, up_reply = node.call_api(home, "POST", "/file/upload/start/v1",
                                     {"local_path": str(sample), "remote_path": remote, "wait_result": True},
                                     timeout=timeout)
    if status != 200:
        raise RuntimeError(f"upload failed: {up_reply}")
    uploaded = time.monotonic() - began
    status, down_reply = node.call_api(home, "POST", "/file/download/start/v1",
                                       {"remote_path": remote, "destination_path": str(demo / "restored"),
                                        "wait_result": True}, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"download failed: {down_reply}")
    restored = Path(down_reply["result"]["local_path"])
    if restored.read_bytes() != sample.read_bytes():
        raise RuntimeError(f"{restored} differs from {sample}")
    return {"remote_path": remote, "suppliers": [s["global_id"] for s in suppliers], "size": sample.stat().st_size,
            "local_path": str(restored), "upload_seconds": round(uploaded, 3),
            "download_seconds": round(time.monotonic() - began - uploaded, 3)}
