"""The catalog is as durable as the suppliers' deletes it leads to: every commit is synced to disk.

With WAL and synchronous=NORMAL a commit reaches the disk only at the next checkpoint: after a
power loss the catalog could list a version whose fragments the suppliers already deleted (they
fsync). These tests read the pragma in effect on the real module, and watch the system calls of a
real process: the catalog's delete must be synced before the process goes on to tell a supplier.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.storage.catalog import Catalog

FULL = 2


def test_the_catalog_syncs_every_commit(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    try:
        assert catalog.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert catalog.db.execute("PRAGMA synchronous").fetchone()[0] == FULL
    finally:
        catalog.close()


SCRIPT = """
import os, sys
from pathlib import Path
from services.storage.catalog import Catalog

catalog = Catalog(Path(sys.argv[1]))
item, _ = catalog.create("master$alice@h_8084", "docs/a.txt")
version = catalog.add_version(item, 1024, 2, "wrapped")
os.write(1, b"BEGIN\\n")
catalog.delete_item(item)
os.write(1, b"SEND-DELETE\\n")
catalog.close()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_catalog_delete_is_on_disk_before_the_supplier_delete_is_sent(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    root = Path(__file__).resolve().parents[2]
    subprocess.run(["strace", "-f", "-e", "trace=write,fsync,fdatasync", "-o", str(trace), sys.executable, "-c",
                    textwrap.dedent(SCRIPT), str(tmp_path / "catalog.sqlite")],
                   check=True, cwd=root, capture_output=True, timeout=60)
    calls = trace.read_text().splitlines()
    begin = next(i for i, line in enumerate(calls) if "BEGIN" in line)
    send = next(i for i, line in enumerate(calls) if "SEND-DELETE" in line)
    synced = [line for line in calls[begin:send] if "fsync(" in line or "fdatasync(" in line]
    assert synced, "the catalog's delete was not synced before the supplier delete would go out"
