"""WAN conditions between namespaces in user space, for kernels without `sch_netem`.

`netns.netem` uses `tc netem` where the kernel has it. Where it does not, it starts this program
instead: a small router that moves each host's bridge address from its veth (`eth0`) to a TUN
device (`wan0`) it opens inside that host's namespace, then forwards every IPv4 packet between the
TUN devices after `delay_ms` and drops `loss_percent` of them, at random, as netem does on each link
(one delay per packet per direction: a round trip takes twice the delay).

    python -m deploy.wan --subnet N --count C [--nat 3,4] --delay 50 --loss 1 --ready FILE

It runs until killed (SIGTERM); its TUN devices vanish with it. `netns.destroy` stops it through the
pid written to `state_dir(subnet)/wan.pid`. Needs root.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import itertools
import os
import random
import selectors
import signal
import struct
import sys
import time
from pathlib import Path

from deploy import netns

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
DEVICE = "wan0"
MAX_PACKET = 65535
MAX_QUEUED = 50_000
"""Packets held at once (a real link's queue is bounded too); beyond it, packets are dropped."""


def open_tun(name: str = DEVICE) -> int:
    """A TUN device in the calling thread's namespace; the device lives while the descriptor is open."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _ip(namespace: str, *args: str) -> None:
    netns._ip("-n", namespace, *args)


class Wan:
    """Forwards packets between hosts' TUN devices with a delay and a loss rate."""

    def __init__(self, delay_ms: float, loss_percent: float, rng: random.Random | None = None):
        self.delay = delay_ms / 1000.0
        self.loss = loss_percent / 100.0
        self.rng = rng or random.Random()
        self.hosts: dict[bytes, int] = {}
        """IPv4 address (4 bytes) -> the TUN descriptor of the host that has it."""
        self.queue: list[tuple[float, int, int, bytes]] = []
        self._order = itertools.count()
        self.forwarded = 0
        self.dropped = 0

    def attach(self, address: str, fd: int) -> None:
        self.hosts[bytes(int(part) for part in address.split("."))] = fd

    def accept(self, packet: bytes, now: float) -> None:
        """One packet read from a host: queue it for its destination, or drop it."""
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return  # IPv4 only
        target = self.hosts.get(packet[16:20])
        if target is None or self.rng.random() < self.loss or len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        heapq.heappush(self.queue, (now + self.delay, next(self._order), target, packet))

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """The packets whose delay has passed, in order."""
        out = []
        while self.queue and self.queue[0][0] <= now:
            _, _, target, packet = heapq.heappop(self.queue)
            out.append((target, packet))
        return out

    def run(self, stop: list[bool]) -> None:
        selector = selectors.DefaultSelector()
        for fd in self.hosts.values():
            selector.register(fd, selectors.EVENT_READ)
        while not stop[0]:
            now = time.monotonic()
            timeout = max(0.0, self.queue[0][0] - now) if self.queue else 0.5
            for key, _ in selector.select(timeout):
                for _ in range(64):  # drain a burst, then look at the clock again
                    try:
                        packet = os.read(key.fd, MAX_PACKET)
                    except BlockingIOError:
                        break
                    self.accept(packet, time.monotonic())
            for target, packet in self.due(time.monotonic()):
                try:
                    os.write(target, packet)
                    self.forwarded += 1
                except OSError:  # the host's queue is full: the packet is lost, as on a link
                    self.dropped += 1


def pid_file(subnet: int) -> Path:
    return netns.state_dir(subnet) / "wan.pid"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.wan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subnet", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--nat", default="", help="nodes behind NAT routers (their routers face the WAN)")
    parser.add_argument("--delay", type=float, default=50.0, help="one-way delay, ms")
    parser.add_argument("--loss", type=float, default=1.0, help="loss, percent")
    parser.add_argument("--ready", type=Path, help="file written once the devices are up")
    args = parser.parse_args(argv)
    natted = tuple(int(i) for i in args.nat.split(",") if i.strip())
    layout = netns.Layout(args.subnet, args.count, natted)
    wan = Wan(args.delay, args.loss)
    for index in range(layout.count):
        front = layout.router(index) if index in layout.nat else layout.namespace(index)
        address = layout.public_address(index)
        fd = netns.in_namespace(front, open_tun)
        # The host's bridge address moves to the TUN device: its packets now cross this program.
        netns._ip("-n", front, "addr", "del", f"{address}/24", "dev", "eth0", check=False)
        _ip(front, "addr", "add", f"{address}/24", "dev", DEVICE)
        _ip(front, "link", "set", DEVICE, "up")
        wan.attach(address, fd)
    stop = [False]

    def on_signal(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pid = pid_file(args.subnet)
    pid.parent.mkdir(parents=True, exist_ok=True)
    pid.write_text(str(os.getpid()))
    if args.ready:
        args.ready.write_text("ready")
    try:
        wan.run(stop)
    finally:
        pid.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
