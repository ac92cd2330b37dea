"""Shared set-up of the identity service tests (no tests here): options, a fake DHT, a fake transport."""

from __future__ import annotations

import itertools
from typing import Any

from common import codec, subjects
from common.bus import Bus
from common.config_store import ConfigStore
from common.endpoint import endpoint
from common.home import NodeHome
from common.process import ServiceBase
from tests.helpers import free_port


def configure(home: NodeHome, idserver: bool = False, **extra: Any) -> int:
    """Options for a fast test node; returns the identity server port."""
    port = free_port()
    values = {"personal/private-key-size": 1024, "services/identity-server/enabled": idserver,
              "services/identity-server/web-port": port, "services/tcp-connections/tcp-port": free_port()}
    values.update(extra)
    ConfigStore(home.options_file).set_many(values)
    return port


class FakeDht(ServiceBase):
    """Records the nicknames the identity process publishes."""

    published: list[dict[str, Any]] = []

    @endpoint("publish_nickname", internal=True)
    async def publish_nickname(self, nickname: str, idurl: str) -> dict[str, Any]:
        self.published.append({"nickname": nickname, "idurl": idurl})
        return {"nickname": nickname}


class FakeTransport(ServiceBase):
    """`transport.send` that delivers straight to another node's bus as `inbox.<Command>`."""

    routes: dict[str, Bus] = {}
    sent: list[dict[str, Any]] = []
    _ids = itertools.count(1)

    @endpoint("send", internal=True)
    async def send(self, remote_idurl: str, command: str, payload: Any, timeout: float = 30) -> Any:
        me = await self.ctx.bus.call_internal("identity", "my_identity")
        self.sent.append({"remote_idurl": remote_idurl, "command": command, "payload": payload})
        body = {"command": command, "owner_idurl": me["idurl"], "creator_idurl": me["idurl"],
                "packet_id": f"p{next(self._ids)}", "payload": payload}
        msg = await self.routes[remote_idurl].nc.request(subjects.inbox(command), codec.dumps(body), timeout=timeout)
        return codec.loads(msg.data)
