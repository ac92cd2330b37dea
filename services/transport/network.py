"""Bringing the node onto the network, as the reference engine's `network_connector` machine.

    AT_STARTUP --ready--> CONNECTED --disconnect--> DISCONNECTED --reconnect--> AT_STARTUP
    AT_STARTUP --listen-failed--> NETWORK? --ready--> CONNECTED

While in AT_STARTUP or NETWORK? a keeper loop retries with backoff: it waits for the node's
identity (the node may have none yet) and for the listening port. `wake()` retries at once,
which the service calls when the identity is created or changed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from common.automat import Automat, AutomatRegistry
from common.background import Background
from common.errors import NodeError, NotFoundError
from services.transport.gateway import Gateway

log = logging.getLogger(__name__)

AT_STARTUP = "AT_STARTUP"
CONNECTED = "CONNECTED"
DISCONNECTED = "DISCONNECTED"
NETWORK = "NETWORK?"


class NetworkMachine(Automat):
    """Whether this node is on the network."""

    initial: ClassVar[str] = AT_STARTUP
    transitions: ClassVar[dict[tuple[str, str], str]] = {
        (AT_STARTUP, "ready"): CONNECTED,
        (AT_STARTUP, "listen-failed"): NETWORK,
        (NETWORK, "ready"): CONNECTED,
        (CONNECTED, "identity-lost"): AT_STARTUP,
        (NETWORK, "identity-lost"): AT_STARTUP,
        ("*", "disconnect"): DISCONNECTED,
        ("*", "reconnect"): AT_STARTUP,
    }


class NetworkConnector:
    """Owns the keeper loop that brings the gateway's transports up, and the machine above."""

    def __init__(self, gateway: Gateway, automats: AutomatRegistry | None = None,
                 retry_min: float = 0.5, retry_max: float = 10.0):
        self.gateway = gateway
        self.machine = NetworkMachine("network_connector", automats, name="network_connector")
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.last_error = ""
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._keeper = Background(self._keep)

    @property
    def state(self) -> str:
        return self.machine.state

    def start(self) -> None:
        self._keeper.start()

    async def stop(self) -> None:
        await self._keeper.stop()
        await self.gateway.stop()

    def wake(self) -> None:
        """Retry bringing the network up now (identity created or changed, options changed)."""
        self._wake.set()

    async def identity_changed(self) -> None:
        """Reload our identity (a new revision, new contacts) and retry setup if still down."""
        try:
            await self.gateway.load_identity()
        except NodeError as err:
            # An error that crossed the bus keeps its status, not its class: 404 is "no identity".
            if not isinstance(err, NotFoundError) and err.status != 404:
                log.info("identity not available: %s", err.reason)
                self.wake()
                return
            # Links made as the erased identity must not carry the next one's packets.
            log.info("local identity is gone: going off the network until a new one exists")
            self.gateway.me = None
            for transport in self.gateway.transports:
                await transport.stop()
            self._fire("identity-lost")
        self.wake()

    async def disconnect(self) -> None:
        """Close every link and stop listening until `reconnect`."""
        self._fire("disconnect")
        for transport in self.gateway.transports:
            await transport.stop()

    async def reconnect(self) -> None:
        """Drop every link and bring the network up again."""
        for transport in self.gateway.transports:
            await transport.stop()
        self._fire("reconnect")
        self.wake()

    async def wait_connected(self, timeout: float) -> bool:
        """True once CONNECTED; False at the deadline or when explicitly DISCONNECTED."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while self.state != CONNECTED:
            if self.state == DISCONNECTED or loop.time() >= deadline:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                return self.state == CONNECTED
        return True

    def _fire(self, event: str) -> None:
        old = self.machine.state
        if self.machine.fire(event) != old:
            self._changed.set()

    async def _bring_up(self) -> bool:
        try:
            await self.gateway.load_identity()
        except NodeError as err:
            self.last_error = f"no identity: {err.message}"
            return False
        try:
            for transport in self.gateway.transports:
                await transport.start()
        except OSError as err:
            self.last_error = f"cannot listen: {err}"
            log.warning("transport cannot listen: %s", err)
            self._fire("listen-failed")
            return False
        self.last_error = ""
        self._fire("ready")
        return True

    async def _keep(self) -> None:
        delay = self.retry_min
        while True:
            if self.state in (AT_STARTUP, NETWORK):
                if await self._bring_up():
                    delay = self.retry_min
                else:
                    delay = min(delay * 2, self.retry_max)
                    await self._sleep(delay)
                    continue
            await self._sleep(None)

    async def _sleep(self, delay: float | None) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()
