"""A real local network of supervised nodes, shared by the end-to-end tests of one run.

`BITDUST_TEST_NODES` (default 6) nodes are started with `deploy.localnet.up` on ports shifted by
`BITDUST_TEST_PORT_OFFSET` (default 20000), and stopped at the end of the session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from deploy import localnet, node
from tests.e2e.client import NodeClient

NODES = int(os.environ.get("BITDUST_TEST_NODES", "7"))
PORT_OFFSET = int(os.environ.get("BITDUST_TEST_PORT_OFFSET", "20000"))


class LocalNet:
    """The running network: its folder and a client per node."""

    def __init__(self, root: Path, nodes: list[NodeClient]):
        self.root = root
        self.nodes = nodes

    def wait_healthy(self, timeout: float = 60) -> None:
        for client in self.nodes:
            node.wait_healthy(client.home, timeout)


@pytest.fixture(scope="session")
def localnet_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    root = tmp_path_factory.mktemp("localnet")
    try:
        doc = localnet.up(root, NODES, PORT_OFFSET, timeout=120)
        yield LocalNet(root, [NodeClient.from_listing(item) for item in doc["nodes"]])
    finally:
        localnet.down(root)


@pytest.fixture
def net(localnet_nodes: LocalNet) -> LocalNet:
    """The shared network, healthy at the start of each test."""
    localnet_nodes.wait_healthy()
    return localnet_nodes


@pytest.fixture(scope="session")
def identities(localnet_nodes: LocalNet) -> dict[str, dict]:
    """Every node of the network with an identity `node-i` (created once per session)."""
    localnet_nodes.wait_healthy()
    found: dict[str, dict] = {}
    for client in localnet_nodes.nodes:
        status, doc = client.call("identity_get")
        if status != 200:
            status, doc = client.call("identity_create", username=client.name)
            assert status == 200, doc
        found[client.name] = doc["result"]
    return found
