"""Two-or-more-node harness for transport tests and the transport benchmark (no tests here).

Each node is its own home with a real nats-server, a small fake identity process (1024-bit key,
the identity contract of the identity process) and the real transport service. The fakes share
one dict of identities, standing in for the identity servers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from common import crypto, subjects
from common.bus import Bus
from common.config_store import ConfigStore
from common.endpoint import endpoint
from common.errors import NotFoundError
from common.home import NodeHome
from common.process import ProcessContext, ServiceBase
from services.transport import network
from services.transport.service import TransportService
from tests.helpers import await_for, connect, free_port, nats_server, running_service

Directory = dict[str, dict[str, Any]]


def make_identity(name: str, port: int, bits: int = 1024) -> tuple[RSAPrivateKey, dict[str, Any]]:
    """A key and the identity document the identity process would answer for it."""
    key = crypto.generate_private_key(bits)
    idurl = f"http://127.0.0.1:8084/{name}.xml"
    doc = {"idurl": idurl, "global_id": f"{name}@127.0.0.1_8084", "name": name,
           "contacts": [f"tcp://127.0.0.1:{port}"], "publickey": crypto.public_key_to_ssh(key.public_key()),
           "revision": 1, "sources": [idurl]}
    return key, doc


class FakeIdentity(ServiceBase):
    """The identity process's `my_identity`, `sign` and `fetch`, backed by a shared directory."""

    def __init__(self, ctx: ProcessContext, key: RSAPrivateKey, doc: dict[str, Any] | None, directory: Directory):
        super().__init__(ctx)
        self.key = key
        self.doc = doc
        self.directory = directory
        self.fetches = 0

    @endpoint("my_identity", internal=True)
    async def my_identity(self) -> dict[str, Any]:
        if self.doc is None:
            raise NotFoundError("no identity", reason="identity_not_exist")
        return self.doc

    @endpoint("sign", internal=True)
    async def sign(self, data: str, key_id: str | None = None) -> dict[str, Any]:
        return {"signature": crypto.b64(crypto.sign(self.key, crypto.unb64(data))), "key_id": key_id or "master"}

    @endpoint("fetch", internal=True)
    async def fetch(self, idurl: str, refresh: bool = False) -> dict[str, Any]:
        self.fetches += 1
        if idurl not in self.directory:
            raise NotFoundError(f"{idurl} is unknown", reason="identity_not_found")
        return self.directory[idurl]


@dataclass
class Node:
    """One test node: home, keys, fake identity, transport and a client bus."""

    name: str
    home: NodeHome
    port: int
    key: RSAPrivateKey
    doc: dict[str, Any]
    identity: FakeIdentity
    client: Bus
    transport: TransportService | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def idurl(self) -> str:
        return str(self.doc["idurl"])

    async def api(self, method: str, **kwargs: Any) -> Any:
        return await self.client.call(f"api.transport.{method}", kwargs, timeout=30)

    async def send(self, remote: "Node | str", command: str, timeout: float = 30, **kwargs: Any) -> Any:
        idurl = remote if isinstance(remote, str) else remote.idurl
        request = dict(remote_idurl=idurl, command=command, timeout=timeout, **kwargs)
        return await self.client.call(subjects.internal("transport", "send"), request, timeout=timeout + 5)

    async def start_transport(self) -> TransportService:
        service = await self._stack.enter_async_context(running_service(self.home, "transport", TransportService))
        assert isinstance(service, TransportService)
        self.transport = service
        await service.ctx.bus.nc.flush()  # its endpoints are subscribed before anyone calls them
        if self.identity.doc is not None:
            await await_for(self._connected, timeout=10, what=f"{self.name} network up")
        return service

    async def _connected(self) -> bool:
        return self.transport is not None and self.transport.connector.state == network.CONNECTED

    async def stop_transport(self) -> None:
        await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()
        self.transport = None


@contextlib.asynccontextmanager
async def transport_node(root: Path, name: str, directory: Directory, with_identity: bool = True,
                         start: bool = True) -> AsyncIterator[Node]:
    """A running node named `name` under `root`; its identity is registered in `directory`."""
    with nats_server(root / name) as home:
        port = free_port()
        ConfigStore(home.options_file).set("services/tcp-connections/tcp-port", port)
        key, doc = make_identity(name, port)
        directory[doc["idurl"]] = doc
        def factory(ctx: ProcessContext) -> FakeIdentity:
            return FakeIdentity(ctx, key, doc if with_identity else None, directory)

        async with running_service(home, "identity", factory) as ident:
            assert isinstance(ident, FakeIdentity)
            client = await connect(home)
            node = Node(name=name, home=home, port=port, key=key, doc=doc, identity=ident, client=client)
            try:
                if start:
                    await node.start_transport()
                yield node
            finally:
                await node.stop_transport()
                await client.close()
