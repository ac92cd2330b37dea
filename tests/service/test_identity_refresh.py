"""A new address is saved before it is published: a crash between the two never makes the node
take its own new revision for a takeover at its next start (issue 19).

The identity process runs on a real bus with its own identity server; `refresh_contacts` is made
to crash (an exception no handler catches, standing in for a kill) at each of its durable steps,
the process is started again on the same home, and the node must still hold its identity, with
its identity server serving the revision it holds.
"""

from __future__ import annotations

import aiohttp
import pytest

from services.identity import document
from services.identity.service import IdentityService
from tests.helpers import await_for, connect, free_port, running_service
from tests.service.test_identity_support import configure


class Crash(BaseException):
    """The process dies here: nothing after this step runs."""


def _crash(*_args: object, **_kwargs: object) -> None:
    raise Crash()


async def _served(idurl: str) -> document.IdentityDocument:
    async with aiohttp.ClientSession() as http, http.get(idurl) as resp:
        return document.parse_verified(await resp.read())


@pytest.mark.parametrize("step", ["save", "publish"])
async def test_a_crash_inside_refresh_contacts_is_not_a_takeover(bus_home, step):
    port = configure(bus_home, idserver=True)
    async with running_service(bus_home, "identity", IdentityService) as service:
        bus = await connect(bus_home)
        try:
            created = await bus.call("api.identity.identity_create",
                                     {"username": "dora", "preferred_servers": [f"127.0.0.1:{port}"]}, timeout=30)
        finally:
            await bus.close()
        assert isinstance(service, IdentityService)
        # The node is reached at another port now; the next step of the refresh dies.
        service.ctx.config.set("services/tcp-connections/tcp-port", free_port())
        if step == "save":
            service.local.save = _crash  # type: ignore[method-assign]
        else:
            service.client.upload = _crash  # type: ignore[method-assign]
        with pytest.raises(Crash):
            await service.refresh_contacts()

    idurl = created["idurl"]
    async with running_service(bus_home, "identity", IdentityService) as service:
        assert isinstance(service, IdentityService)

        async def settled() -> bool:
            """The start's takeover check and refresh are done: the server serves what we hold, or
            the node gave its identity up."""
            held = service.doc
            if held is None:
                return True
            served = await _served(idurl)
            port = service.ctx.config.get("services/tcp-connections/tcp-port")
            return served.revision == held.revision and held.contacts[0].endswith(f":{port}")

        await await_for(settled, timeout=20, what="the identity settled after the restart")
        assert service.local.taken_over() is None, "the node took its own new revision for a takeover"
        assert service.doc is not None and service.doc.revision == 2
        assert (await _served(idurl)) == service.doc
