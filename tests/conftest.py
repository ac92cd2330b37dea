"""Shared fixtures: a real nats-server per test that needs the bus."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from common.home import NodeHome
from tests.helpers import nats_server


@pytest.fixture
def bus_home(tmp_path: Path) -> Iterator[NodeHome]:
    """A node home with a real nats-server running on its bus port and token."""
    with nats_server(tmp_path / "node") as home:
        yield home
