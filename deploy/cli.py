"""`bitdust`: start, stop and inspect a node, move files, read its state, call its API, run local networks."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from common import codec, registry
from common.home import NodeHome, resolve_home
from deploy import cli_open, localnet, node
from deploy.cli_client import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, CliError,
                               NodeClient)

EPILOG = """exit codes:
  0    done
  1    failed (the node answered with an error, or a transfer failed)
  2    usage: a bad command or argument
  3    node not running (or its API does not answer)
  130  interrupted with Ctrl-C (a transfer goes on on the node unless --cancel-on-interrupt)

Every command prints a table for people; --json prints the node's data as JSON for scripts.
`files put` and `files get` draw a live bar on a terminal, and print JSON lines on a pipe or with
--json: {"message_type": "status", "percent_done", "bytes_done", "total_bytes", "seconds_remaining", ...}
while the transfer runs, then one {"message_type": "summary", ...}.
`bitdust api METHOD key=value ...` calls any API method and prints its raw answer."""


def _print(doc: Any) -> None:
    sys.stdout.write(codec.dumps(doc).decode() + "\n") if not sys.stdout.isatty() else print(
        json.dumps(doc, indent=2, sort_keys=True))


def _value(text: str) -> Any:
    try:
        return codec.loads(text)
    except ValueError:
        return text


def _console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=False)


def cmd_api(home: NodeHome, method_name: str, pairs: list[str]) -> int:
    method = registry.load().get(method_name)
    if method is None:
        print(f"unknown API method {method_name}; `bitdust help` lists them", file=sys.stderr)
        return EXIT_USAGE
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            print(f"arguments are key=value, got {pair!r}", file=sys.stderr)
            return EXIT_USAGE
        kwargs[key] = _value(value)
    if not method.routes:
        print(f"{method_name} is available on the WebSocket API only", file=sys.stderr)
        return EXIT_USAGE
    status, doc = NodeClient(home).raw(method_name, **kwargs)
    _print(doc)
    return EXIT_OK if status == 200 else EXIT_FAILED


# ---- what the commands gather -----------------------------------------------------------------------

def _safe(call: Callable[[], Any]) -> Any:
    """One section of a screen: a node that answers one call with an error still shows the rest."""
    try:
        return call()
    except CliError as err:
        if err.code == EXIT_NOT_RUNNING:
            raise
        return {"error": err.reason or err.message}


def gather_status(client: NodeClient) -> dict[str, Any]:
    """Everything `bitdust status` shows, as data (what `--json` prints)."""
    info = client.call("process_info")
    ident = _safe(lambda: client.call("identity_get"))
    net = _safe(lambda: client.call("network_status"))
    connected = net.get("network_connector_state") == "CONNECTED" if "error" not in net else False
    suppliers = _safe(lambda: client.call("suppliers_list"))
    wanted = _safe(lambda: client.call("config_get", key="services/customer/suppliers-number"))
    customers = _safe(lambda: client.call("customers_list"))
    consumed = _safe(lambda: client.call("space_consumed"))
    donated = _safe(lambda: client.call("space_donated"))
    uploads = _safe(lambda: client.call("files_uploads"))
    downloads = _safe(lambda: client.call("files_downloads"))
    bus = info.get("bus") or {}
    doc: dict[str, Any] = {
        "home": str(client.home.root), "api": node.api_url(client.home),
        "identity": ({"global_id": ident.get("global_id"), "idurl": ident.get("idurl"),
                      "revision": ident.get("revision")} if "error" not in ident else ident),
        "network": {"connected": connected, "state": net.get("network_connector_state")} if "error" not in net
        else dict(net, connected=False),
        "programs": [{"name": p.get("name"), "state": p.get("state"), "pid": p.get("pid"),
                      "uptime_seconds": p.get("uptime"),
                      "bus": bus.get(p.get("name")) if p.get("name") in bus else None}
                     for p in info.get("processes") or []],
    }
    if isinstance(suppliers, list):
        doc["suppliers"] = {"online": sum(1 for s in suppliers if s.get("supplier_state") == "CONNECTED"),
                            "hired": sum(1 for s in suppliers if s.get("idurl")),
                            "wanted": int((wanted or {}).get("value") or len(suppliers))
                            if isinstance(wanted, dict) and "error" not in wanted else len(suppliers)}
    else:
        doc["suppliers"] = suppliers
    doc["customers"] = {"count": len(customers)} if isinstance(customers, list) else customers
    if "error" in consumed or "error" in donated:
        doc["space"] = consumed if "error" in consumed else donated
    else:
        doc["space"] = {"used": consumed.get("used"), "needed": consumed.get("needed"),
                        "donated": donated.get("donated"), "donated_used": donated.get("used")}
    if "error" in uploads or isinstance(downloads, dict):
        doc["transfers"] = uploads if "error" in uploads else downloads
    else:
        doc["transfers"] = {"uploads": len(uploads.get("running") or []), "downloads": len(downloads or [])}
    return doc


def master_key(client: NodeClient) -> str:
    ident = client.call("identity_get")
    return f"master${ident['global_id']}"


def remote_path(client: NodeClient, path: str) -> str:
    """`KEY:PATH` as given, or PATH under this node's master key."""
    if ":" in path:
        return path
    return f"{master_key(client)}:{path.strip('/')}"


# ---- commands ----------------------------------------------------------------------------------------

def cmd_status(client: NodeClient, as_json: bool) -> int:
    from deploy import cli_views

    doc = gather_status(client)
    if as_json:
        _print(doc)
    else:
        _console().print(cli_views.status_screen(doc))
    return EXIT_OK


def cmd_files(client: NodeClient, args: argparse.Namespace) -> int:
    from deploy import cli_transfer, cli_views

    action = args.files_action
    if action == "ls":
        kwargs = {"remote_path": remote_path(client, args.path)} if args.path else {}
        items = client.call("files_list", **kwargs)
        return _show(args.json, items, lambda: cli_views.files_table(items))
    if action == "info":
        item = client.call("file_info", remote_path=remote_path(client, args.remote))
        suppliers = _safe(lambda: client.call("suppliers_list"))
        suppliers = suppliers if isinstance(suppliers, list) else []
        return _show(args.json, item, lambda: cli_views.file_info(item, suppliers))
    if action == "rm":
        result = client.call("file_delete", remote_path=remote_path(client, args.remote))
        return _show(args.json, result, lambda: f"deleted {result.get('remote_path', args.remote)}")
    if action == "put":
        return _put(client, args, cli_transfer)
    return _get(client, args, cli_transfer)


def _put(client: NodeClient, args: argparse.Namespace, cli_transfer: Any) -> int:
    local = Path(args.local).expanduser().resolve()
    if not local.exists():
        raise CliError(f"{args.local}: no such file or folder", EXIT_USAGE)
    target = args.remote or local.name
    if target.endswith("/") or target.endswith(":"):
        target += local.name
    remote = remote_path(client, target)
    size = local.stat().st_size if local.is_file() else sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
    uids: set[str] = set()
    paths: list[str] = []

    def start() -> Any:
        result = client.call("file_upload_start", local_path=str(local), remote_path=remote)
        for version in result.get("versions") or []:
            uids.add(str(version.get("version")))
            paths.append(str(version.get("remote_path")))
        return result

    def cancel() -> None:
        for path in paths or [remote]:
            _safe(lambda p=path: client.call("file_upload_stop", remote_path=p))  # type: ignore[misc]

    view = cli_transfer.pick_view(args.json, f"put {local.name}")
    return asyncio.run(cli_transfer.follow(
        client, "upload", start, lambda d: str(d.get("backup_id")) in uids, view, cancel, args.cancel_on_interrupt,
        total_hint=size, expected=lambda r: len(r.get("versions") or []) or 1,
        extra={"remote_path": remote, "local_path": str(local)}))


def _get(client: NodeClient, args: argparse.Namespace, cli_transfer: Any) -> int:
    remote = remote_path(client, args.remote)
    dest = Path(args.dest or ".").expanduser().resolve()
    item = client.call("file_info", remote_path=remote)
    prefix = str(item.get("remote_path") or remote)
    started: dict[str, Any] = {}

    def start() -> Any:
        started.update(client.call("file_download_start", remote_path=remote, destination_path=str(dest)))
        return started

    def matches(data: dict[str, Any]) -> bool:
        path = str(data.get("remote_path") or "")
        return path == prefix or path.startswith(prefix.rstrip("/") + "/")

    def cancel() -> None:
        _safe(lambda: client.call("file_download_stop", remote_path=remote))

    view = cli_transfer.pick_view(args.json, f"get {Path(str(item.get('path') or remote)).name}")
    return asyncio.run(cli_transfer.follow(
        client, "download", start, matches, view, cancel, args.cancel_on_interrupt,
        total_hint=int(item.get("size") or 0), expected=lambda r: int(r.get("files") or 1),
        extra={"remote_path": prefix, "local_path": str(dest / str(item.get("name") or ""))}))


def cmd_transfers(client: NodeClient, args: argparse.Namespace) -> int:
    from deploy import cli_views

    def fetch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return list(client.call("files_uploads").get("running") or []), list(client.call("files_downloads") or [])

    if not args.watch:
        uploads, downloads = fetch()
        return _show(args.json, {"uploads": uploads, "downloads": downloads},
                     lambda: cli_views.transfers_table(uploads, downloads))
    import time

    from rich.live import Live

    try:
        with Live(cli_views.transfers_table(*fetch()), console=_console(), refresh_per_second=2) as live:
            while True:
                time.sleep(1)
                live.update(cli_views.transfers_table(*fetch()))
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_events(client: NodeClient, args: argparse.Namespace) -> int:
    from deploy import cli_views

    if not args.follow:
        counts = client.call("events_list")
        rows = [{"event_id": k, "count": v} for k, v in sorted((counts or {}).items())]
        return _show(args.json, counts, lambda: cli_views.table("events seen", rows, [("event_id", "event"),
                                                                                      ("count", "count")]))

    async def follow() -> int:
        async with client.events() as events:
            while True:
                event = await events.next(3600)
                if event is not None:
                    print(codec.dumps(event).decode() if args.json or not sys.stdout.isatty()
                          else cli_views.event_line(event), flush=True)

    try:
        return asyncio.run(follow())
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_msg(client: NodeClient, args: argparse.Namespace) -> int:
    from deploy import cli_views

    if args.msg_action == "send":
        data = _value(args.text) if args.text.startswith("{") else {"message": args.text}
        result = client.call("message_send", recipient_id=args.recipient, data=data)
        return _show(args.json, result, lambda: f"sent to {args.recipient}: {(result or {}).get('state', 'ok')}")
    items = client.call("message_history", recipient_id=args.peer, limit=args.limit)
    return _show(args.json, items, lambda: cli_views.history_table(items))


def cmd_simple(client: NodeClient, args: argparse.Namespace) -> int:
    """suppliers, customers, network, shares, groups, services."""
    from deploy import cli_views

    name = args.command
    if name == "suppliers":
        items = client.call("suppliers_list")
        return _show(args.json, items, lambda: cli_views.suppliers_table(items))
    if name == "customers":
        items = client.call("customers_list", verbose=True)
        return _show(args.json, items, lambda: cli_views.customers_table(items))
    if name == "network":
        doc = client.call("network_status", suppliers=True, customers=True, cache=False, tcp=True, proxy=True,
                          dht=True)
        return _show(args.json, doc, lambda: cli_views.key_values("network", doc))
    if name == "services":
        items = client.call("services_list")
        return _show(args.json, items, lambda: cli_views.services_table(items))
    items = client.call(f"{name}_list")
    return _show(args.json, items, lambda: cli_views.generic_table(name, items or []))


def _show(as_json: bool, data: Any, view: Callable[[], Any]) -> int:
    if as_json:
        _print(data)
    else:
        _console().print(view())
    return EXIT_OK


# ---- arguments ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the data as JSON (JSON lines for put/get) instead of tables")
    parser = argparse.ArgumentParser(prog="bitdust", description="BitDust node: peer-to-peer encrypted storage "
                                     "and messaging, as a suite of supervised processes.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="node home folder (default $BITDUST_HOME or ~/.bitdust)")
    parser.add_argument("--json", action="store_true", default=False, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[common], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    add("start", "start the node (supervisord and every process) and wait until healthy")
    add("stop", "stop the node")
    add("restart", "stop, then start the node")
    add("status", "one screen: identity, network, programs, suppliers, customers, space, transfers")
    cli_open.add_parser(sub)
    files = add("files", "your files on the network: ls, put, get, rm, info")
    files_sub = files.add_subparsers(dest="files_action", required=True, metavar="ACTION")
    ls = files_sub.add_parser("ls", help="list files (all, or under PATH)", parents=[common])
    ls.add_argument("path", nargs="?", help="KEY:PATH, or a PATH under your master key")
    put = files_sub.add_parser("put", help="upload a file or folder, with a live bar", parents=[common])
    put.add_argument("local", help="local file or folder")
    put.add_argument("remote", nargs="?", help="KEY:PATH or PATH (default: the local name under your master key)")
    put.add_argument("--cancel-on-interrupt", action="store_true", help="Ctrl-C stops the upload on the node too")
    get = files_sub.add_parser("get", help="download a file or folder, with a live bar", parents=[common])
    get.add_argument("remote", help="KEY:PATH or PATH under your master key")
    get.add_argument("dest", nargs="?", help="local folder to write into (default: the current folder)")
    get.add_argument("--cancel-on-interrupt", action="store_true", help="Ctrl-C stops the download on the node too")
    rm = files_sub.add_parser("rm", help="delete a file or folder from the network", parents=[common])
    rm.add_argument("remote")
    info = files_sub.add_parser("info", help="versions, state and redundancy per position", parents=[common])
    info.add_argument("remote")
    transfers = add("transfers", "uploads and downloads running")
    transfers.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    for name, text in (("suppliers", "the suppliers storing your files"), ("customers", "whom you store for"),
                       ("network", "peers, relay and DHT"), ("shares", "shared keys"), ("groups", "groups"),
                       ("services", "the logical services and their state")):
        add(name, text)
    msg = add("msg", "private messages: send, history")
    msg_sub = msg.add_subparsers(dest="msg_action", required=True, metavar="ACTION")
    send = msg_sub.add_parser("send", help="send a text (or a JSON object) to a user", parents=[common])
    send.add_argument("recipient", help="global id, e.g. alice@host_port")
    send.add_argument("text")
    history = msg_sub.add_parser("history", help="the conversation with a user", parents=[common])
    history.add_argument("peer")
    history.add_argument("--limit", type=int, default=50)
    events = add("events", "events seen by the node (counts), or --follow them live")
    events.add_argument("--follow", action="store_true")
    api = add("api", "call an API method and print its raw answer: bitdust api METHOD key=value ...")
    api.add_argument("method")
    api.add_argument("params", nargs="*")
    add("help", "list the API methods")
    net = add("localnet", "run many nodes on this host (loopback, or one namespace each)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = NodeHome(resolve_home(args.home))
    try:
        return _run(home, args)
    except CliError as err:
        print(f"bitdust: {err.message}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of a pipe went away (`bitdust files ls | head`): nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _run(home: NodeHome, args: argparse.Namespace) -> int:
    command = args.command
    client = NodeClient(home)
    if command == "start":
        took = node.start(home)
        print(f"node at {home.root} is healthy ({took:.2f}s); API {node.api_url(home)}, "
              f"secret in {home.apisecret_file}")
    elif command == "stop":
        print("stopped" if node.stop(home) else "not running")
    elif command == "restart":
        node.stop(home)
        took = node.start(home)
        print(f"node at {home.root} is healthy ({took:.2f}s)")
    elif command == "status":
        return cmd_status(client, args.json)
    elif command == "files":
        return cmd_files(client, args)
    elif command == "transfers":
        return cmd_transfers(client, args)
    elif command == "events":
        return cmd_events(client, args)
    elif command == "msg":
        return cmd_msg(client, args)
    elif command in ("suppliers", "customers", "network", "shares", "groups", "services"):
        return cmd_simple(client, args)
    elif command == "api":
        return cmd_api(home, args.method, args.params)
    elif command == "open":
        return cli_open.run(home, args)
    elif command == "help":
        for method in sorted(registry.load(), key=lambda m: m.name):
            routes = ", ".join(f"{r.verb} {r.pattern}" for r in method.routes) or "WebSocket only"
            print(f"{method.name:<28} [{method.owner}] {routes}")
    elif command == "localnet":
        return _localnet(args)
    return EXIT_OK


def _localnet(args: argparse.Namespace) -> int:
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
            return EXIT_FAILED
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
            return EXIT_FAILED
        print(f"stored {found['size']} bytes as {found['remote_path']} with suppliers "
              f"{', '.join(found['suppliers'])} in {found['upload_seconds']}s, got them back byte-identical "
              f"in {found['download_seconds']}s: {found['local_path']}")
    else:
        stopped = localnet.down(args.dir)
        print(f"stopped {len(stopped)} nodes")
    return EXIT_OK


def _netem(text: str) -> tuple[float, float]:
    try:
        delay, loss = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--netem wants DELAY_MS,LOSS_PCT (e.g. 50,1), not {text!r}") from None
    if not (0 <= delay <= 10_000 and 0 <= loss <= 100):
        raise ValueError("--netem delay must be 0..10000 ms and loss 0..100 %")
    return delay, loss


if __name__ == "__main__":
    sys.exit(main())
