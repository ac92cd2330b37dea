"""`Transfers`: when the jobs are idle, and a rebuild that fails part way says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.errors import UnavailableError
from services.storage.catalog import READY, Block, Catalog
from services.storage.transfers import FAILED, Job, Transfers


class DownMover:
    """A mover whose suppliers cannot be reached."""

    async def fetch_shares(self, *_: Any, **__: Any) -> Any:
        raise UnavailableError("the transport is restarting")


async def _progress(_event: str, _data: dict[str, Any]) -> None:
    return None


def _transfers(tmp_path: Path) -> Transfers:
    return Transfers(Catalog(tmp_path / "catalog.sqlite"), DownMover(), _progress,  # type: ignore[arg-type]
                     lambda *_: None)


async def test_idle_until_a_job_runs_and_again_once_it_is_done(tmp_path: Path) -> None:
    transfers = _transfers(tmp_path)
    assert transfers.idle()
    job = Job("download", "a.bin", "master$alice@host", "uid", 1, str(tmp_path / "a.bin"))
    transfers.downloads["a.bin"] = job
    assert not transfers.idle()
    job.done.set()
    assert transfers.idle()


async def test_a_rebuild_that_fails_part_way_is_failed_and_done(tmp_path: Path) -> None:
    transfers = _transfers(tmp_path)
    catalog = transfers.catalog
    item, _ = catalog.create("master$alice@host", "a.bin")
    version = catalog.add_version(item, 1024, 2, "wrapped", state=READY, size=1024)
    catalog.put_block(Block(version.uid, 0, 1024, 1040, ["h0", "h1"], "01"))
    job = Job("rebuild", "position 0", "", "", 1024, "supplier", 0, 2)
    transfers.rebuilds["0"] = job
    with pytest.raises(UnavailableError):
        await transfers.rebuild_position(job, 0, ["s0", "s1"], [(item.key_id, version)])
    assert job.done.is_set() and job.state == FAILED and "restarting" in job.error
    assert transfers.idle()
