"""`bitdust`: start, stop and inspect a node, call its API, run local networks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import codec, registry
from common.home import NodeHome, resolve_home
from deploy import localnet, node


def _print(doc: Any) -> None:
    sys.stdout.write(codec.dumps(doc).decode() + "\n") if not sys.stdout.isatty() else print(
        __import__("json").dumps(doc, indent=2, sort_keys=True))


def _value(text: str) -> Any:
    try:
        return codec.loads(text)
    except ValueError:
        return text


def cmd_api(home: NodeHome, method_name: str, pairs: list[str]) -> int:
    method = registry.load().get(method_name)
    if method is None:
        print(f"unknown API method {method_name}; `bitdust help` lists them", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            print(f"arguments are key=value, got {pair!r}", file=sys.stderr)
            return 2
        kwargs[key] = _value(value)
    if not method.routes:
        print(f"{method_name} is available on the WebSocket API only", file=sys.stderr)
        return 2
    route = next((r for r in method.routes if not r.path_params), None)
    if route is None:
        route = method.routes[0]
        path = route.pattern
        for name in route.path_params:
            path = path.replace(f"(?P<{name}>[^/]+)", str(kwargs.pop(name, "")))
    else:
        path = route.pattern
    if route.verb == "GET":
        from urllib.parse import urlencode

        query = urlencode({k: v if isinstance(v, str) else codec.dumps(v).decode() for k, v in kwargs.items()})
        status, doc = node.call_api(home, "GET", path + ("?" + query if query else ""))
    else:
        status, doc = node.call_api(home, route.verb, path, kwargs)
    _print(doc)
    return 0 if status == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bitdust", description="BitDust node: peer-to-peer encrypted storage "
                                     "and messaging, as a suite of supervised processes.")
    parser.add_argument("--home", help="node home folder (default $BITDUST_HOME or ~/.bitdust)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start the node (supervisord and every process) and wait until healthy")
    sub.add_parser("stop", help="stop the node")
    sub.add_parser("restart", help="stop, then start the node")
    sub.add_parser("status", help="show each process of the node")
    api = sub.add_parser("api", help="call an API method: bitdust api METHOD key=value ...")
    api.add_argument("method")
    api.add_argument("params", nargs="*")
    sub.add_parser("help", help="list the API methods")
    net = sub.add_parser("localnet", help="run many nodes on this host (loopback, or one namespace each)")
    net_sub = net.add_subparsers(dest="action", required=True)
    net_up = net_sub.add_parser("up", help="start N nodes; returns once each answers process_health")
    net_up.add_argument("--nodes", type=int, default=3)
    net_up.add_argument("--dir", required=True, type=Path)
    net_up.add_argument("--port-offset", type=int, default=0, help="shift every port by this much")
    net_up.add_argument("--identities", action="store_true", help="create an identity node-i on every node")
    net_up.add_argument("--netns", action="store_true",
                        help="each node a separate host: its own network namespace and 10.77.x address (root)")
    net_up.add_argument("--netem", metavar="DELAY_MS,LOSS_PCT", default="",
                        help="with --netns: WAN conditions on every link, e.g. 50,1")
    net_up.add_argument("--behind-nat", metavar="I,J", default="",
                        help="with --netns: these nodes (not node 0) sit behind NAT routers and use relays, e.g. 3,4")
    net_demo = net_sub.add_parser("demo", help="node-0 stores a sample file with its suppliers and gets it back")
    net_demo.add_argument("--dir", required=True, type=Path)
    net_down = net_sub.add_parser("down", help="stop every node of a local network")
    net_down.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)

    home = NodeHome(resolve_home(args.home))
    if args.command == "start":
        took = node.start(home)
        print(f"node at {home.root} is healthy ({took:.2f}s); API {node.api_url(home)}, "
              f"secret in {home.apisecret_file}")
    elif args.command == "stop":
        print("stopped" if node.stop(home) else "not running")
    elif args.command == "restart":
        node.stop(home)
        took = node.start(home)
        print(f"node at {home.root} is healthy ({took:.2f}s)")
    elif args.command == "status":
        if not node.is_running(home):
            print("not running")
            return 1
        for proc in node.supervisor(home).call_sync("getAllProcessInfo"):
            print(f"{proc['name']:<10} {proc['statename']:<9} pid {proc['pid']:<7} {proc['description']}")
    elif args.command == "api":
        return cmd_api(home, args.method, args.params)
    elif args.command == "help":
        for method in sorted(registry.load(), key=lambda m: m.name):
            routes = ", ".join(f"{r.verb} {r.pattern}" for r in method.routes) or "WebSocket only"
            print(f"{method.name:<28} [{method.owner}] {routes}")
    elif args.command == "localnet":
        if args.action == "up":
            try:
                netem = _netem(args.netem) if args.netem else None
                if netem and not args.netns:
                    raise ValueError("--netem needs --netns")
                natted = tuple(int(i) for i in args.behind_nat.split(",") if i.strip()) if args.behind_nat else ()
                doc = localnet.up(args.dir, args.nodes, args.port_offset, args.identities,
                                  namespaces=args.netns, netem=netem, behind_nat=natted)
            except (RuntimeError, ValueError, TimeoutError) as exc:
                print(f"localnet up failed: {exc}", file=sys.stderr)
                return 1
            print(f"{len(doc['nodes'])} nodes healthy in {doc['started_in']}s; see {args.dir / 'localnet.json'}")
            for item in doc["nodes"]:
                inside = f"ip netns exec {item['netns']} " if item.get("netns") else ""
                if item.get("behind_nat"):
                    inside = f"(behind NAT) {inside}"
                print(f"  {item['name']}: {inside}curl -H 'api_secret: {item['api_secret']}' "
                      f"http://127.0.0.1:{item['api_port']}/process/info/v1")
        elif args.action == "demo":
            try:
                found = localnet.storage_demo(args.dir)
            except (RuntimeError, OSError, ValueError) as exc:
                print(f"storage demo failed: {exc}", file=sys.stderr)
                return 1
            print(f"stored {found['size']} bytes as {found['remote_path']} with suppliers "
                  f"{', '.join(found['suppliers'])} in {found['upload_seconds']}s, got them back byte-identical "
                  f"in {found['download_seconds']}s: {found['local_path']}")
        else:
            stopped = localnet.down(args.dir)
            print(f"stopped {len(stopped)} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _netem(text: str) -> tuple[float, float]:
    try:
        delay, loss = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--netem wants DELAY_MS,LOSS_PCT (e.g. 50,1), not {text!r}") from None
    if not (0 <= delay <= 10_000 and 0 <= loss <= 100):
        raise ValueError("--netem delay must be 0..10000 ms and loss 0..100 %")
    return delay, loss
