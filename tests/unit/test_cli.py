"""The `bitdust` CLI without a node: arguments and exit codes, progress lines, tables."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from common.home import NodeHome
from deploy import cli, cli_views
from deploy.cli_client import EXIT_NOT_RUNNING, EXIT_USAGE
from deploy.cli_transfer import JsonLines, Tally

MIB = 1024 * 1024


def _job(done: int, total: int, blocks: int, finished: bool = False, state: str = "running") -> dict:
    return {"version": "key:a.bin/F1", "remote_path": "key:a.bin", "bytes_processed": done, "total_size": total,
            "block_number": blocks, "blocks_total": blocks if finished else 0, "block_size": 16 * MIB,
            "done": finished, "state": state, "error": "" if state != "failed" else "block 2: 0 of 2 suppliers"}


def test_status_lines_rise_to_the_size_then_a_summary():
    total = 50 * MIB
    tally = Tally("upload", total_hint=total, expected=1)
    out = io.StringIO()
    view = JsonLines(out)
    view.show(tally)
    for blocks in (1, 2, 3):
        tally.update(_job(min(total, blocks * 16 * MIB), total, blocks))
        view.show(tally)
        view.show(tally)  # nothing new: no second line
    tally.update(_job(total, total, 4, finished=True, state="ready"))
    view.show(tally)
    view.emit(tally.summary(remote_path="key:a.bin"))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    status = [line for line in lines if line["message_type"] == "status"]
    assert [s["bytes_done"] for s in status] == [0, 16 * MIB, 32 * MIB, 48 * MIB, total]
    assert status[1]["blocks_total"] == 4  # known from the size before the node says so
    assert status[-1]["percent_done"] == 1.0 and status[-1]["total_bytes"] == total
    assert all(set(s) >= {"percent_done", "bytes_done", "total_bytes", "seconds_remaining"} for s in status)
    summary = lines[-1]
    assert summary["message_type"] == "summary" and summary["state"] == "ready" and summary["bytes"] == total
    assert tally.finished and not tally.failed


def test_a_degraded_upload_ends_well_a_failed_one_does_not():
    tally = Tally("upload", expected=1)
    tally.update(_job(MIB, MIB, 1, finished=True, state="degraded"))
    assert tally.finished and not tally.failed and tally.summary()["state"] == "degraded"
    tally.update(_job(MIB, 2 * MIB, 1, finished=True, state="failed"))
    summary = tally.summary()
    assert summary["state"] == "failed" and "0 of 2 suppliers" in summary["errors"][0]


def test_a_transfer_of_many_files_ends_when_every_file_has():
    tally = Tally("download", expected=2)
    tally.update(_job(MIB, MIB, 1, finished=True, state="ready"))
    assert not tally.finished
    tally.update(dict(_job(MIB, MIB, 1, finished=True, state="ready"), version="key:b.bin/F2"))
    assert tally.finished and tally.bytes_done == 2 * MIB


def test_bad_arguments_exit_2(capsys):
    for argv in (["files", "put"], ["files", "bogus"], ["nonsense"], ["transfers", "--watch", "extra"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == EXIT_USAGE, argv
    capsys.readouterr()


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for line in ("0    done", "1    failed", "2    usage", "3    node not running"):
        assert line in text


def test_json_goes_after_the_command_too():
    args = cli.build_parser().parse_args(["files", "ls", "--json"])
    assert args.json is True
    assert cli.build_parser().parse_args(["status"]).json is False


@pytest.mark.parametrize("argv", [["status"], ["files", "ls"], ["suppliers", "--json"], ["api", "process_info"]])
def test_a_node_that_is_not_running_is_one_line_and_exit_3(tmp_path: Path, capsys, argv):
    home = NodeHome(tmp_path / "home")
    home.ensure()  # a node that ran once: secret written, nothing listening
    assert cli.main(["--home", str(home.root), *argv]) == EXIT_NOT_RUNNING
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not running" in err and "Traceback" not in err


def test_a_home_that_never_ran_exits_3(tmp_path: Path, capsys):
    assert cli.main(["--home", str(tmp_path / "nothing"), "status"]) == EXIT_NOT_RUNNING
    assert "never started" in capsys.readouterr().err


def test_put_of_a_missing_file_is_a_usage_error(tmp_path: Path, capsys):
    home = NodeHome(tmp_path / "home")
    home.ensure()
    code = cli.main(["--home", str(home.root), "files", "put", str(tmp_path / "missing.bin")])
    assert code == EXIT_USAGE and "no such file" in capsys.readouterr().err


def _render(*parts) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    for part in parts:
        console.print(part)
    return console.export_text()


STATUS = {
    "home": "/home/u/.bitdust", "api": "http://127.0.0.1:8180",
    "identity": {"global_id": "alice@id.example_8084", "revision": "3"},
    "network": {"connected": True, "state": "CONNECTED"},
    "programs": [{"name": "storage", "state": "RUNNING", "pid": 42, "uptime_seconds": 3700, "bus": True}],
    "suppliers": {"online": 3, "hired": 4, "wanted": 4}, "customers": {"count": 2},
    "space": {"used": 3 * MIB, "needed": 1024 * MIB, "donated": 8 * 1024 * MIB, "donated_used": 0},
    "transfers": {"uploads": 1, "downloads": 0},
}


def test_status_screen_shows_everything_on_one_screen():
    text = _render(cli_views.status_screen(STATUS))
    for expected in ("alice@id.example_8084  revision 3", "connected", "3 online / 4 wanted", "customers",
                     "3.0 MiB of 1.0 GiB", "8.0 GiB", "1 uploads", "storage", "RUNNING", "1h 1m"):
        assert expected in text, expected


def test_status_screen_says_what_is_missing():
    doc = dict(STATUS, identity={"error": "identity_not_exist"}, network={"connected": False, "state": "DISCONNECTED"},
               suppliers={"error": "unavailable"})
    text = _render(cli_views.status_screen(doc))
    assert "identity_not_exist" in text and "not connected (DISCONNECTED)" in text and "unavailable" in text


def test_file_info_shows_redundancy_per_position():
    item = {"remote_path": "master$a@h_1:x.bin", "type": "file", "size": MIB, "key_id": "master$a@h_1",
            "versions": [{"version": "F1", "state": "ready", "progress": "100%", "size": MIB, "time": 0,
                          "ecc_map": "ecc/2x2", "fragments": 2,
                          "suppliers": [{"position": 0, "fragments": 1}, {"position": 1, "fragments": 1}]}]}
    suppliers = [{"position": 0, "global_id": "bob@h_1", "supplier_state": "CONNECTED"},
                 {"position": 1, "global_id": "carol@h_1", "supplier_state": "OFFLINE"}]
    text = _render(cli_views.file_info(item, suppliers))
    assert "redundancy of F1 (ecc/2x2)" in text
    assert "bob@h_1" in text and "carol@h_1" in text and "OFFLINE" in text


def test_tables_of_each_command_render():
    text = _render(
        cli_views.files_table([{"path": "docs/a.txt", "key_alias": "master", "type": "file", "size": 10,
                                "versions": [{"state": "ready"}], "latest": "2026-01-01 00:00:00"}]),
        cli_views.transfers_table([{"remote_path": "k:a", "progress": "50%", "bytes_processed": MIB,
                                    "total_size": 2 * MIB, "block_number": 1, "state": "running"}], []),
        cli_views.suppliers_table([{"position": 0, "global_id": "bob@h_1", "supplier_state": "CONNECTED"}]),
        cli_views.customers_table([]),
        cli_views.history_table([{"doc": {"direction": "out", "payload": {"time": 0, "data": {"message": "hi"}},
                                          "sender": {"glob_id": "a@h"}, "recipient": {"glob_id": "b@h"},
                                          "state": "delivered"}}]),
        cli_views.generic_table("groups", [{"group_key_id": "g$a@h", "label": "team", "members": [1, 2]}]),
    )
    for expected in ("docs/a.txt", "1.0 MiB", "bob@h_1", "customers: none", "hi", "delivered", "team"):
        assert expected in text, expected
