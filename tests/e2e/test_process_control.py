"""Supervision of one node of its own: restarts, kill -9 healing, config persistence, stop."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterator

import pytest

from common.config_store import ConfigStore
from deploy import localnet, node
from tests.e2e.client import NodeClient
from tests.e2e.conftest import PORT_OFFSET
from tests.helpers import wait_for

SOLO_OFFSET = PORT_OFFSET + 60


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeClient]:
    root: Path = tmp_path_factory.mktemp("solo")
    try:
        doc = localnet.up(root, 1, SOLO_OFFSET)
        yield NodeClient.from_listing(doc["nodes"][0])
    finally:
        localnet.down(root)


def _pids(client: NodeClient) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in client.ok("process_info")["processes"] if p["state"] == "RUNNING"}


def test_process_info_lists_programs(solo):
    info = solo.ok("process_info")
    names = {p["name"] for p in info["processes"]}
    assert names == set(node.PROGRAMS)
    assert all(p["pid"] > 0 and p["uptime"] >= 0 for p in info["processes"])
    assert all(info["bus"].values())


def test_process_debug_refuses_without_terminal(solo):
    status, doc = solo.get("/process/debug/v1")
    assert (status, doc["reason"]) == (409, "not_in_terminal")


def test_service_restart_changes_pid(solo):
    before = _pids(solo)["dht"]
    result = solo.ok("service_restart", service_name="service_entangled_dht")
    assert result["pid_before"] == before and result["pid_after"] != before
    assert _pids(solo)["dht"] == result["pid_after"]
    node.wait_healthy(solo.home, 30)


@pytest.mark.parametrize("program", node.PROGRAMS)
def test_kill_9_is_healed(solo, program):
    before = _pids(solo)
    os.kill(before[program], signal.SIGKILL)

    def replaced() -> bool:
        try:
            now = _pids(solo)
        except (AssertionError, OSError):
            return False
        return now.get(program, before[program]) != before[program] and node.healthy(solo.home)

    wait_for(replaced, timeout=30, interval=0.1, what=f"{program} restarted by supervisord")
    assert solo.ok("config_get", key="interface/api/rest-http-port")["value"] == solo.api_port


def test_bus_and_gateway_share_one_cpu_after_restarts(solo):
    # After the kill -9 tests above, supervisord has restarted both: each start pins again.
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: nothing to share")
    pids = _pids(solo)
    bus_cpus, api_cpus = os.sched_getaffinity(pids["bus"]), os.sched_getaffinity(pids["api"])
    assert len(bus_cpus) == 1 and bus_cpus == api_cpus
    assert bus_cpus == {node.shared_cpu(ConfigStore(solo.home.options_file))}
    assert len(os.sched_getaffinity(pids["identity"])) == len(os.sched_getaffinity(0))  # the others: any CPU
    # uvloop runs every Python process (nothing else maps its library).
    for name in node.PYTHON_PROGRAMS:
        assert "uvloop/loop" in Path(f"/proc/{pids[name]}/maps").read_text(), name
    # supervisord runs without `ssl` (deploy/supervise.py): it makes no TLS connection.
    supervisord = int((solo.home.run / "supervisord.pid").read_text())
    maps = Path(f"/proc/{supervisord}/maps").read_text()
    assert "deploy.supervise" in Path(f"/proc/{supervisord}/cmdline").read_text() and "_ssl" not in maps


def test_config_survives_process_restart(solo):
    solo.ok("config_set", key="services/customer/needed-space", value="3 GB")
    old_api = _pids(solo)["api"]
    status, doc = solo.get("/process/restart/v1")
    assert status == 200

    def restarted() -> bool:
        try:
            return node.healthy(solo.home) and _pids(solo)["api"] != old_api
        except (AssertionError, OSError, KeyError):
            return False

    wait_for(restarted, timeout=60, interval=0.1, what="node restarted")
    assert solo.ok("config_get", key="services/customer/needed-space")["value"] == 3 * 1024**3


def test_process_stop_not_instant_waits_for_idle_then_stops(solo):
    # Nothing is being transferred: the graceful stop goes ahead at once.
    status, doc = solo.get("/process/stop/v1", instant=False)
    assert status == 200 and "transfers" in doc["message"]
    wait_for(lambda: not node.is_running(solo.home), timeout=30, what="node stopped")
    wait_for(lambda: not _alive(solo.home.run / "supervisord.pid"), timeout=30, what="supervisord gone")
    node.start(solo.home, wait=True, timeout=60)


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def test_process_stop_then_localnet_down(solo):
    status, _ = solo.get("/process/stop/v1")
    assert status == 200
    wait_for(lambda: not node.is_running(solo.home), timeout=30, what="node stopped")
