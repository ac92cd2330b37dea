"""deploy.node.render: the bus and the gateway share one CPU unless told not to; deploy/pin.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config_store import ConfigStore
from common.home import NodeHome
from deploy import node

PIN = Path(node.__file__).with_name("pin.py")


def _rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: set[int], share: bool = True) -> str:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus)
    home = NodeHome(tmp_path / "home")
    home.ensure()
    config = ConfigStore(home.options_file)
    config.set("interface/bus/port", 9381)
    config.set(node.SHARED_CPU_OPTION, share)
    return node.render(home).read_text()


def _section(conf: str, program: str) -> str:
    return conf.split(f"[program:{program}]")[1].split("[program:")[0]


def test_the_bus_and_the_gateway_get_one_cpu_picked_by_the_bus_port(tmp_path, monkeypatch):
    conf = _rendered(tmp_path, monkeypatch, {0, 1, 2, 3})
    cpu = 9381 % 4
    assert f"pin.py {cpu} -- " in _section(conf, "bus")
    assert f'BITDUST_CPU="{cpu}"' in _section(conf, "api")
    for name in node.PYTHON_PROGRAMS:
        if name != "api":
            assert "BITDUST_CPU" not in _section(conf, name), name


@pytest.mark.parametrize(("cpus", "share"), [({0}, True), ({0, 1}, False)])
def test_nothing_is_pinned_on_one_cpu_or_with_the_option_off(tmp_path, monkeypatch, cpus, share):
    conf = _rendered(tmp_path, monkeypatch, cpus, share)
    assert "pin.py" not in conf and "BITDUST_CPU" not in conf
    assert _section(conf, "bus").split("command=")[1].startswith(node.nats_server_binary())


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this system")
def test_pin_runs_the_program_on_that_cpu_only():
    cpu = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-S", str(PIN), str(cpu), "--", sys.executable, "-c",
                          "import os; print(sorted(os.sched_getaffinity(0)))"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == f"[{cpu}]"


def test_pin_runs_the_program_unpinned_on_a_cpu_the_machine_lacks():
    out = subprocess.run([sys.executable, "-S", str(PIN), "4095", "--", sys.executable, "-c", "print('ran')"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "ran" and "not usable" in out.stderr


def test_pin_refuses_a_command_line_without_a_program():
    out = subprocess.run([sys.executable, "-S", str(PIN), "0"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "usage" in out.stderr
