"""The spool helpers: private unique files, whole-file reads, paths confined to allowed folders, sweeping."""

from __future__ import annotations

import os
import time

import pytest

from common import spool
from common.errors import InvalidArgumentError, NotFoundError
from common.home import NodeHome


def test_home_has_a_private_spool(tmp_path):
    home = NodeHome(tmp_path / "node")
    home.ensure()
    assert home.spool == tmp_path / "node" / "spool" and os.stat(home.spool).st_mode & 0o777 == 0o700


def test_new_files_are_private_unique_and_read_back(tmp_path):
    data = os.urandom(300_000)
    paths = {spool.write_new(tmp_path, memoryview(data), prefix="out") for _ in range(20)}
    assert len(paths) == 20 and all(p.name.startswith("out-") and len(p.name) == 36 for p in paths)
    path = paths.pop()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert spool.read_file(path) == data
    with pytest.raises(InvalidArgumentError) as large:
        spool.read_file(path, max_size=len(data) - 1)
    assert large.value.reason == "payload_too_large"
    with pytest.raises(NotFoundError) as missing:
        spool.read_file(tmp_path / "nope")
    assert missing.value.reason == "file_not_found"
    with pytest.raises(InvalidArgumentError):
        spool.read_file(tmp_path)
    assert spool.remove(path) and not spool.remove(path)


def test_paths_must_resolve_inside_an_allowed_folder(tmp_path):
    allowed, other = tmp_path / "spool", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (other / "f").write_bytes(b"x")
    (allowed / "link").symlink_to(other / "f")
    assert spool.resolve_inside(str(allowed / "a"), [allowed]) == allowed / "a"
    for bad in (other / "f", allowed / "link", allowed / ".." / "other" / "f", "spool/a", tmp_path / "spoolx"):
        with pytest.raises(InvalidArgumentError) as refused:
            spool.resolve_inside(bad, [allowed])
        assert refused.value.reason == "invalid_path"


def test_sweep_removes_only_old_files(tmp_path):
    old, fresh = spool.write_new(tmp_path, b"old"), spool.write_new(tmp_path, b"fresh")
    past = time.time() - 2 * spool.STALE_AFTER
    os.utime(old, (past, past))
    (tmp_path / "folder").mkdir()
    assert spool.sweep(tmp_path) == 1 and not old.exists() and fresh.exists() and (tmp_path / "folder").exists()
    assert spool.sweep(tmp_path / "missing") == 0


@pytest.mark.parametrize("size", [spool.DIRECT_MIN, 3 * 1024 * 1024 + 5])
def test_large_files_written_and_read_past_the_page_cache_are_the_same(tmp_path, size):
    data = os.urandom(size)
    staging = spool.StagingBuffers(size=1024 * 1024, keep=1)
    path = spool.write_new(tmp_path, data, prefix="in", staging=staging)
    assert path.stat().st_size == size and path.read_bytes() == data
    assert spool.read_file(path, direct=True) == data and spool.read_file(path) == data


def test_write_at_pads_only_past_the_end(tmp_path):
    staging = spool.StagingBuffers(size=1024 * 1024, keep=1)
    first, second = os.urandom(spool.DIRECT_MIN + 100), os.urandom(spool.DIRECT_MIN)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        spool.write_at(fd, first, 0, staging)
        spool.write_at(fd, second, len(first), staging)  # unaligned offset: through the page cache
        os.ftruncate(fd, len(first) + len(second))
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == first + second


def test_small_files_skip_direct_io(tmp_path):
    staging = spool.StagingBuffers(size=1024 * 1024, keep=1)
    path = spool.write_new(tmp_path, b"small", staging=staging)
    assert spool.read_file(path, direct=True) == b"small"
