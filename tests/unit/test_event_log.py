"""The event log file: one line per event with its id and data, rotated."""

from __future__ import annotations

import json
from pathlib import Path

from services.api.event_log import MAX_DATA_CHARS, EventLog


def test_one_line_per_event_with_id_and_data(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "logs" / "event.log")
    log.write({"event_id": "local-identity-created", "data": {"idurl": "http://h:1/a.xml"}, "created": 0.5})
    log.write({"event_id": "node-connected", "data": "multi\nline", "created": 1.0})
    log.close()
    lines = (tmp_path / "logs" / "event.log").read_text().splitlines()
    assert len(lines) == 2
    stamp, event_id, data = lines[0].split("  ", 2)
    assert stamp == "1970-01-01T00:00:00.500Z" and event_id == "local-identity-created"
    assert json.loads(data) == {"idurl": "http://h:1/a.xml"}
    assert lines[1].split("  ")[1] == "node-connected"


def test_long_data_is_cut_and_the_file_rotates(tmp_path: Path) -> None:
    path = tmp_path / "event.log"
    log = EventLog(path, max_bytes=10_000, backups=2)
    for i in range(20):
        log.write({"event_id": f"e{i}", "data": "x" * (MAX_DATA_CHARS * 2)})
    log.close()
    assert all(len(line) < MAX_DATA_CHARS + 100 for line in path.read_text().splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["event.log", "event.log.1", "event.log.2"]
    assert path.stat().st_size <= 10_000
