"""Test helpers: free ports, polling with a deadline, a real nats-server, in-process services."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from common.bus import Bus, serve
from common.config_store import ConfigStore
from common.home import NodeHome
from common.process import ProcessContext, ServiceBase
from deploy import node


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.02, what: str = "") -> Any:
    """Poll `predicate` until it returns a truthy value; raise `AssertionError` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def await_for(predicate: Callable[[], Awaitable[Any]], timeout: float = 10, interval: float = 0.02,
                    what: str = "") -> Any:
    """Async `wait_for`: await `predicate()` until truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def nats_server(root: Path) -> Any:
    """A real nats-server for one node home (`root`), with the node's token and config."""
    home = NodeHome(root)
    home.ensure()
    config = ConfigStore(home.options_file)
    config.set("interface/bus/port", free_port())
    node.render(home)
    proc = subprocess.Popen([node.nats_server_binary(), "-c", str(home.run / "nats.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = config.get("interface/bus/port")

    def listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            # A dial to an unbound ephemeral port can connect to itself; that is not the server.
            return bool(sock.getsockname() != sock.getpeername())
        return False

    try:
        wait_for(listening, timeout=10, what="nats-server")
        yield home
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def connect(home: NodeHome, process: str = "test") -> Bus:
    port = ConfigStore(home.options_file).get("interface/bus/port")
    return await Bus.connect(f"nats://127.0.0.1:{port}", home.bus_token(), process)


@contextlib.asynccontextmanager
async def running_service(home: NodeHome, name: str,
                          factory: Callable[[ProcessContext], ServiceBase]) -> AsyncIterator[ServiceBase]:
    """Run one process's service object in this event loop, on the real bus, as `name`."""
    bus = await connect(home, name)
    ctx = ProcessContext(name=name, home=home, bus=bus, config=ConfigStore(home.options_file))
    service = factory(ctx)
    await service.start()
    micro = await serve(bus, service)
    try:
        yield service
    finally:
        await micro.stop()
        await service.stop()
        await bus.close()


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks (files under test may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
