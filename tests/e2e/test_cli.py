"""The `bitdust` command line against a real local network, run as a user runs it (a subprocess).

Node 0 stores with its suppliers (2 by default, so 3 nodes are enough). A 50 MiB `files put` on
a pipe prints JSON lines whose `bytes_done` rises to the size and ends in a summary; on a terminal
(a pty) it draws the bar; `status` and the tables render (the console text is printed, run with -s
to see it); a stopped node and a bad argument end with their documented exit codes.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import localnet, node
from deploy.node import PROJECT_DIR
from tests.e2e.client import NodeClient
from tests.helpers import sha256_file, wait_for

MIB = 1024 * 1024


def bitdust(client_or_home, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    home = client_or_home.home.root if isinstance(client_or_home, NodeClient) else client_or_home
    return subprocess.run([sys.executable, "-m", "deploy.cli", "--home", str(home), *argv], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ, COLUMNS="120"))


def _record(name: str, text: str) -> None:
    print(f"\n$ bitdust {name}\n{text}")


@pytest.fixture(scope="module")
def customer(localnet_nodes, identities) -> NodeClient:
    client = localnet_nodes.nodes[0]
    wanted = int(client.ok("config_get", key="services/customer/suppliers-number")["value"])

    def hired() -> bool:
        items = client.ok("suppliers_list")
        return len([i for i in items if i["supplier_state"] == "CONNECTED"]) == wanted

    wait_for(hired, timeout=120, interval=0.5, what=f"{wanted} suppliers CONNECTED")
    return client


@pytest.fixture(scope="module")
def fifty(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "fifty.bin"
    path.write_bytes(os.urandom(50 * MIB))
    return path


def test_put_on_a_pipe_prints_rising_json_lines_then_a_summary(customer, identities, fifty, tmp_path):
    done = bitdust(customer, "files", "put", str(fifty), "cli/fifty.bin")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    status = [line for line in lines if line["message_type"] == "status"]
    sizes = [s["bytes_done"] for s in status]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == fifty.stat().st_size, sizes
    assert len(status) >= 4  # 50 MiB in 16 MiB blocks: a line per block acknowledged
    assert all(s["total_bytes"] == fifty.stat().st_size for s in status)
    assert status[-1]["percent_done"] == 1.0 and status[-1]["blocks_done"] == 4
    summary = lines[-1]
    master = f"master${identities[customer.name]['global_id']}"
    assert summary["message_type"] == "summary" and summary["state"] == "ready"
    assert summary["bytes"] == fifty.stat().st_size and summary["remote_path"] == f"{master}:cli/fifty.bin"

    got = bitdust(customer, "files", "get", "cli/fifty.bin", str(tmp_path))
    assert got.returncode == 0, got.stderr
    last = json.loads(got.stdout.splitlines()[-1])
    assert last["message_type"] == "summary" and last["state"] == "ready"
    assert sha256_file(tmp_path / "fifty.bin") == sha256_file(fifty)


def test_put_on_a_terminal_draws_the_bar(customer, tmp_path):
    sample = tmp_path / "bar.bin"
    sample.write_bytes(os.urandom(20 * MIB))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "--home", str(customer.home.root), "files", "put",
                             str(sample)], cwd=PROJECT_DIR, stdin=follower, stdout=follower, stderr=follower,
                            env=dict(os.environ, COLUMNS="120", TERM="xterm"))
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the pty closes when the command ends
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    text = screen.decode(errors="replace")
    _record("files put bar.bin (terminal)", text.replace("\r", "\n").splitlines()[-1])
    assert "put bar.bin" in text and "100%" in text and "blocks 2/2" in text and "20.0/20.0 MiB" in text
    words = " ".join(text.split())  # the summary wraps at the terminal's width when the path is long
    assert "upload ready: " in words and "20.0 MiB in" in words and "message_type" not in text


def test_status_and_tables_render(customer, identities):
    me = identities[customer.name]["global_id"]
    shown = bitdust(customer, "status")
    assert shown.returncode == 0, shown.stderr
    _record("status", shown.stdout)
    wanted = customer.ok("config_get", key="services/customer/suppliers-number")["value"]
    for expected in (me, "connected", f"{wanted} online / {wanted} wanted", "space donated", "transfers",
                     "storage", "RUNNING"):
        assert expected in shown.stdout, expected
    as_json = json.loads(bitdust(customer, "status", "--json").stdout)
    assert as_json["identity"]["global_id"] == me and as_json["network"]["connected"] is True
    assert {p["name"] for p in as_json["programs"]} >= {"bus", "identity", "dht", "transport", "storage", "api"}

    tables = ((["files", "ls"], "cli/fifty.bin"), (["files", "info", "cli/fifty.bin"], "redundancy of"),
              (["suppliers"], "CONNECTED"), (["transfers"], "transfers"), (["services"], "service_backups"),
              (["network"], "network_connector_state"), (["shares"], "shares"), (["groups"], "groups"),
              (["events"], "upload-finished"))
    for argv, expected in tables:
        shown = bitdust(customer, *argv)
        assert shown.returncode == 0, (argv, shown.stderr)
        _record(" ".join(argv), shown.stdout)
        assert expected in shown.stdout, (argv, shown.stdout)
        assert json.loads(bitdust(customer, *argv, "--json").stdout) is not None


def test_msg_send_and_history(net, identities):
    sender, receiver = net.nodes[0], net.nodes[1]
    peer = identities[receiver.name]["global_id"]
    sent = bitdust(sender, "msg", "send", peer, "hello from the cli")
    assert sent.returncode == 0, sent.stderr
    history = bitdust(sender, "msg", "history", peer)
    _record(f"msg history {peer}", history.stdout)
    assert history.returncode == 0 and "hello from the cli" in history.stdout


def test_files_rm(customer, tmp_path):
    small = tmp_path / "gone.txt"
    small.write_text("short lived")
    assert bitdust(customer, "files", "put", str(small)).returncode == 0
    removed = bitdust(customer, "files", "rm", "gone.txt")
    assert removed.returncode == 0 and "deleted" in removed.stdout
    missing = bitdust(customer, "files", "info", "gone.txt")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr


def test_exit_codes_for_a_stopped_node_and_bad_arguments(localnet_nodes, customer):
    extra = NodeClient.from_listing(localnet.add(localnet_nodes.root))
    assert bitdust(extra, "status").returncode == 0
    node.stop(extra.home)
    for argv in (["status"], ["files", "ls"], ["files", "put", __file__], ["api", "process_info"]):
        stopped = bitdust(extra, *argv)
        assert stopped.returncode == 3, (argv, stopped.stdout, stopped.stderr)
        assert stopped.stderr == f"bitdust: the node at {extra.home.root} is not running: `bitdust start` starts it\n"
    for argv in (["files", "put"], ["files", "frobnicate"], ["transfers", "--bogus"]):
        bad = bitdust(customer, *argv)
        assert bad.returncode == 2 and "usage:" in bad.stderr, argv
    missing = bitdust(customer, "files", "put", "/nonexistent/file.bin")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    failed = bitdust(customer, "files", "info", "no/such/file.bin")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr


def test_events_follow_prints_events_as_they_come(customer):
    import select
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "--home", str(customer.home.root), "events",
                             "--follow"], cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line, deadline, sent = "", time.monotonic() + 60, 0
        while not line and time.monotonic() < deadline:
            # Sent until one shows: the command connects a moment after it starts.
            customer.ok("event_send", event_id="cli-follow-test", data={"n": sent})
            sent += 1
            if select.select([proc.stdout], [], [], 0.5)[0]:
                line = proc.stdout.readline()
        event = json.loads(line)  # a pipe: JSON lines
        assert event["event_id"] == "cli-follow-test" and "n" in event["data"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def _interrupted_put(client: NodeClient, path: Path, remote: str, *flags: str) -> subprocess.CompletedProcess:
    """`files put` on a pipe, interrupted with SIGINT as soon as the node has started the upload."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "--home", str(client.home.root), "files", "put",
                             str(path), remote, *flags], cwd=PROJECT_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # the first status line comes once the node answered file_upload_start
    assert json.loads(first)["message_type"] == "status"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)


def _upload_state(client: NodeClient, remote: str) -> str:
    uploads = client.ok("files_uploads")
    jobs = [j for j in uploads["running"] + uploads["finished"] if j["remote_path"].endswith(":" + remote)]
    return jobs[-1]["state"] if jobs else ""


def test_ctrl_c_leaves_the_upload_running_unless_asked(customer, tmp_path):
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        for _ in range(30):
            handle.write(os.urandom(10 * MIB))
    left = _interrupted_put(customer, big, "cli/left.bin")
    assert left.returncode == 130 and "goes on on the node" in left.stderr, left.stderr
    assert _upload_state(customer, "cli/left.bin") in ("running", "ready")
    wait_for(lambda: _upload_state(customer, "cli/left.bin") == "ready", timeout=120, interval=0.2,
             what="the interrupted upload finished on the node")
    assert bitdust(customer, "files", "rm", "cli/left.bin").returncode == 0

    stopped = _interrupted_put(customer, big, "cli/stopped.bin", "--cancel-on-interrupt")
    assert stopped.returncode == 130 and "stopped on the node" in stopped.stderr, stopped.stderr
    assert _upload_state(customer, "cli/stopped.bin") == "failed"
