"""Linux network namespaces for a local network whose nodes really are separate hosts.

`bitdust localnet up --netns` puts each node in a namespace of its own, joined to the others by a
bridge in the root namespace (`10.77.<subnet>.0/24`, node i at `.(10 + i)`). A node's API, like
its bus, listens on 127.0.0.1 *inside* its namespace; the harness reaches it from a thread that
entered the namespace with `setns(2)` (`in_namespace`), so no port of a node is exposed outside it.
Which namespace a node lives in is written to `<home>/run/netns`; `deploy.node` reads it.

A node listed in `Layout.nat` sits behind a NAT router of its own: a router namespace holds the
node's bridge address and masquerades (`nft`) for a private link to the node (`192.168.<100+i>.2`),
and forwards nothing inbound, so the node can dial out but nobody can dial it.

Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the `ip` and `tc` tools; NAT also
needs `nft` (Debian's nftables).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")


class NetnsError(RuntimeError):
    """A namespace could not be made or entered (not root, no `ip`, …)."""


def available() -> str:
    """Empty when namespaces can be made here, else why not (for tests to skip with)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the `{tool}` tool is not installed (iproute2)"
    return ""


def nat_available() -> str:
    """Empty when NAT routers can be made here, else why not."""
    why = available()
    if why:
        return why
    if shutil.which("nft") is None:
        return "the `nft` tool is not installed (nftables): no NAT routers"
    return ""


@dataclass(frozen=True)
class Layout:
    """Names and addresses of one network's namespaces, bridge and links."""

    subnet: int
    count: int
    nat: tuple[int, ...] = ()
    """Nodes behind a NAT router of their own."""

    @property
    def bridge(self) -> str:
        return f"bdbr{self.subnet}"

    def namespace(self, index: int) -> str:
        return f"bd{self.subnet}n{index}"

    def veth(self, index: int) -> str:
        return f"bdv{self.subnet}n{index}"

    def address(self, index: int) -> str:
        """The node's own address: on the bridge, or on its private link behind its router."""
        return f"192.168.{100 + index}.2" if index in self.nat else self.public_address(index)

    def public_address(self, index: int) -> str:
        """The node's slot on the bridge (its router's, for a NATed node)."""
        return f"10.77.{self.subnet}.{10 + index}"

    def router(self, index: int) -> str:
        return f"bd{self.subnet}r{index}"

    @property
    def gateway(self) -> str:
        return f"10.77.{self.subnet}.1"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def create(layout: Layout, index_range: range | None = None) -> None:
    """Make the bridge (once) and one namespace per node with its address; idempotent per node."""
    why = available()
    if why:
        raise NetnsError(why)
    if _ip("link", "show", layout.bridge, check=False).returncode != 0:
        _ip("link", "add", layout.bridge, "type", "bridge")
        _ip("addr", "add", f"{layout.gateway}/24", "dev", layout.bridge)
        _ip("link", "set", layout.bridge, "up")
    for index in index_range if index_range is not None else range(layout.count):
        ns, veth = layout.namespace(index), layout.veth(index)
        destroy_node(layout, index)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        # On the bridge: the node itself, or its NAT router.
        front = layout.router(index) if index in layout.nat else ns
        if front != ns:
            _ip("netns", "add", front)
            _ip("-n", front, "link", "set", "lo", "up")
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", front)
        _ip("link", "set", veth, "master", layout.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", front, "addr", "add", f"{layout.public_address(index)}/24", "dev", "eth0")
        _ip("-n", front, "link", "set", "eth0", "up")
        if front != ns:
            _nat_router(layout, index)


def _nat_router(layout: Layout, index: int) -> None:
    """Link node `index` to its router privately; the router masquerades it and forwards nothing in."""
    router, ns = layout.router(index), layout.namespace(index)
    private = f"192.168.{100 + index}"
    _ip("-n", router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("-n", router, "addr", "add", f"{private}.1/24", "dev", "lan0")
    _ip("-n", router, "link", "set", "lan0", "up")
    _ip("-n", ns, "addr", "add", f"{private}.2/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "route", "add", "default", "via", f"{private}.1")
    rules = (
        "table ip bitdust_nat {\n"
        "  chain post {\n    type nat hook postrouting priority 100;\n    oifname != \"lan0\" masquerade\n  }\n"
        "  chain inbound {\n    type filter hook forward priority 0; policy drop;\n"
        "    iifname \"lan0\" accept\n    ct state established,related accept\n  }\n"
        "}\n")
    for argv, stdin in ((["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], None), (["nft", "-f", "-"], rules)):
        done = subprocess.run(["ip", "netns", "exec", router, *argv], input=stdin, capture_output=True, text=True)
        if done.returncode != 0:
            raise NetnsError(f"{' '.join(argv)} in {router}: {done.stderr.strip()}")


def destroy_node(layout: Layout, index: int) -> None:
    forget(layout.namespace(index))
    _ip("link", "del", layout.veth(index), check=False)
    _ip("netns", "del", layout.namespace(index), check=False)
    _ip("netns", "del", layout.router(index), check=False)


def destroy(layout: Layout) -> None:
    """Remove every namespace, link and the bridge of `layout` (what `create` made)."""
    stop_wan(layout.subnet)
    shutil.rmtree(state_dir(layout.subnet), ignore_errors=True)
    for index in range(layout.count):
        destroy_node(layout, index)
    _ip("link", "del", layout.bridge, check=False)


def netem_available() -> str:
    """Empty when `tc netem` works on this kernel, else why not."""
    why = available()
    if why:
        return why
    probe = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"tc netem does not work here ({probe.stderr.strip() or 'error'}): a kernel without sch_netem"
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)
    return ""


def wan_method() -> str:
    """How `netem` makes WAN conditions here: "tc netem", or the user-space emulator and why."""
    why = netem_available()
    return "tc netem" if not why else f"user-space emulator (deploy/wan.py), because {why}"


def netem(layout: Layout, delay_ms: float, loss_percent: float) -> None:
    """WAN conditions on every link: `delay_ms` one way and `loss_percent` loss into each namespace.

    With `tc netem` where the kernel has it, else with the user-space emulator (`deploy.wan`)."""
    if netem_available():
        start_wan(layout, delay_ms, loss_percent)
        return
    for index in range(layout.count):
        veth = layout.veth(index)
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], capture_output=True)
        done = subprocess.run(["tc", "qdisc", "add", "dev", veth, "root", "netem", "delay", f"{delay_ms}ms",
                               "loss", f"{loss_percent}%"], capture_output=True, text=True)
        if done.returncode != 0:
            raise NetnsError(f"tc netem on {veth}: {done.stderr.strip()}")


def state_dir(subnet: int) -> Path:
    """Where a network's helper programs keep their pid and log files."""
    return Path("/run/bitdust-netns") / str(subnet)


def start_wan(layout: Layout, delay_ms: float, loss_percent: float, timeout: float = 15.0) -> None:
    """Run `deploy.wan` for `layout` (restarted if it runs: a node may have been added)."""
    stop_wan(layout.subnet)
    folder = state_dir(layout.subnet)
    folder.mkdir(parents=True, exist_ok=True)
    ready = folder / "wan.ready"
    ready.unlink(missing_ok=True)
    project = Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "deploy.wan", "--subnet", str(layout.subnet), "--count", str(layout.count),
            "--nat", ",".join(map(str, layout.nat)), "--delay", str(delay_ms), "--loss", str(loss_percent),
            "--ready", str(ready)]
    with open(folder / "wan.log", "ab") as log_file:
        process = subprocess.Popen(argv, cwd=project, env=dict(os.environ, PYTHONPATH=str(project)),
                                   stdout=log_file, stderr=log_file, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise NetnsError(f"the WAN emulator did not start (see {folder / 'wan.log'})")
        time.sleep(0.05)


def stop_wan(subnet: int) -> None:
    """Stop the WAN emulator of network `subnet`, if it runs; its TUN devices go with it."""
    pid_path = state_dir(subnet) / "wan.pid"
    try:
        pid = int(pid_path.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_path.unlink(missing_ok=True)


def command(namespace: str | None, argv: list[str]) -> list[str]:
    """`argv` run inside `namespace` (as is when None)."""
    return ["ip", "netns", "exec", namespace, *argv] if namespace else argv


def namespace_of(run_dir: Path) -> str | None:
    """The namespace a node home was started in (`<home>/run/netns`), or None."""
    try:
        return (run_dir / "netns").read_text().strip() or None
    except OSError:
        return None


_runners: dict[str, concurrent.futures.ThreadPoolExecutor] = {}


def _enter(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise NetnsError(f"setns into {namespace}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def in_namespace(namespace: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `func` on a thread that lives in `namespace`: the sockets it opens are that host's."""
    runner = _runners.get(namespace)
    if runner is None:
        runner = _runners[namespace] = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=f"netns-{namespace}", initializer=_enter, initargs=(namespace,))
    return runner.submit(func, *args, **kwargs).result()


def forget(namespace: str) -> None:
    """Let the threads that live in `namespace` end (they keep a deleted namespace alive)."""
    runner = _runners.pop(namespace, None)
    if runner is not None:
        runner.shutdown(wait=True)
