"""What the storage e2e modules share: a customer with its suppliers, uploads and downloads through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.client import NodeClient
from tests.helpers import wait_for

SUPPLIERS = 4


def master_key(identities: dict[str, dict], name: str) -> str:
    return f"master${identities[name]['global_id']}"


def suppliers_connected(client: NodeClient, count: int = SUPPLIERS) -> list[dict]:
    """The customer's suppliers when `count` are hired and all CONNECTED, else []."""
    items = client.ok("suppliers_list")
    live = [i for i in items if i["supplier_state"] == "CONNECTED"]
    return items if len(items) == count and len(live) == count else []


def hire_suppliers(client: NodeClient, count: int = SUPPLIERS) -> NodeClient:
    """`client` as a customer of `count` CONNECTED suppliers, kept while away (replaced after an hour)."""
    client.ok("config_set", key="services/customer/suppliers-number", value=count)
    client.ok("config_set", key="services/employer/replace-offline-after", value=3600)
    wait_for(lambda: suppliers_connected(client, count), timeout=90, interval=0.5,
             what=f"{count} suppliers CONNECTED")
    return client


def node_of(net: Any, idurl: str) -> NodeClient:
    """The node of the network running identity `idurl`."""
    for client in net.nodes:
        if client.ok("identity_get")["idurl"] == idurl:
            return client
    raise AssertionError(idurl)


def upload(client: NodeClient, local: Path, remote: str) -> dict:
    """`file_upload_start` waiting for its result; fails the test unless it answers 200."""
    status, doc = client.call("file_upload_start", local_path=str(local), remote_path=remote, wait_result=True)
    assert status == 200, doc
    return doc["result"]


def download(client: NodeClient, remote: str, dest: Path) -> dict:
    """`file_download_start` waiting for its result; fails the test unless it answers 200."""
    status, doc = client.call("file_download_start", remote_path=remote, destination_path=str(dest),
                              wait_result=True)
    assert status == 200, doc
    return doc["result"]


def downloaded_path(client: NodeClient, remote: str, dest: Path) -> Path:
    """Where `download` wrote the file."""
    return Path(download(client, remote, dest)["local_path"])
