"""The storage process's view of the other processes, over the bus (the edge of its domain code).

Only control documents cross the bus here; fragment bytes go through spool files that the
transport process reads and writes (see `services/transport/service.py`, `send_file`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

from common import crypto, subjects
from common.bus import Bus
from common.errors import NodeError

MY_IDENTITY_TTL = 30.0


class BusWire:
    """Packets to other nodes through the transport process (`fragments.Wire`)."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def send_file(self, idurl: str, name: str, path: Path, sha256: str, timeout: float) -> dict[str, Any]:
        return await self._call("send_file", timeout, remote_idurl=idurl, command="Data", path=str(path),
                                packet_id=f"{name}:{secrets.token_hex(4)}", payload_sha256=sha256)

    async def fetch_file(self, idurl: str, name: str, customer_idurl: str | None, timeout: float) -> dict[str, Any]:
        payload: dict[str, Any] = {"name": name}
        if customer_idurl:
            payload["customer_idurl"] = customer_idurl
        return await self._call("send", timeout, remote_idurl=idurl, command="Retrieve", payload=payload,
                                reply_file=True)

    async def _call(self, verb: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
        kwargs["timeout"] = timeout
        return dict(await self.bus.call(subjects.internal("transport", verb), kwargs, timeout=timeout + 5))

    async def request(self, idurl: str, command: str, payload: Any, timeout: float) -> dict[str, Any]:
        return await self._call("send", timeout, remote_idurl=idurl, command=command, payload=payload)


class BusPeers:
    """Identity, DHT and transport, as the employer and the catalog backup use them."""

    def __init__(self, bus: Bus):
        self.bus = bus
        self.wire = BusWire(bus)
        self._me: dict[str, Any] | None = None
        self._me_at = 0.0

    async def me(self) -> dict[str, Any] | None:
        if self._me and time.monotonic() - self._me_at < MY_IDENTITY_TTL:
            return self._me
        try:
            self._me = dict(await self.bus.call_internal("identity", "my_identity", timeout=5))
        except NodeError:
            self._me = None
        self._me_at = time.monotonic()
        return self._me

    def forget_me(self) -> None:
        self._me = None

    async def my_idurl(self) -> str | None:
        me = await self.me()
        return str(me["idurl"]) if me else None

    async def candidates(self, count: int) -> list[str]:
        found = await self.bus.call(subjects.api("dht", "dht_user_random"), {"layer_id": 3, "count": count},
                                    timeout=15)
        return [str(i) for i in found or [] if i]

    async def request(self, idurl: str, command: str, payload: Any, timeout: float) -> dict[str, Any]:
        return await self.wire.request(idurl, command, payload, timeout)

    async def publish_suppliers(self, record: dict[str, Any]) -> None:
        await self.bus.call_internal("dht", "write_record", timeout=20, record_type="suppliers",
                                     key=record["customer_idurl"], value=record)

    async def suppliers_of(self, customer_idurl: str) -> list[str]:
        return [str(i or "") for i in (await self.suppliers_record(customer_idurl)).get("suppliers") or []]

    async def suppliers_record(self, customer_idurl: str) -> dict[str, Any]:
        """The customer's signed suppliers record from the DHT, `{}` when there is none."""
        reply = await self.bus.call_internal("dht", "read_record", timeout=20, record_type="suppliers",
                                             key=customer_idurl)
        if reply.get("read") != "success" or not isinstance(reply.get("value"), dict):
            return {}
        return dict(reply["value"])

    async def public_key(self, key_id: str) -> Any:
        reply = await self.bus.call_internal("identity", "public_key", timeout=10, key_id=key_id)
        return crypto.load_public_key(str(reply["public"]))

    async def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        reply = await self.bus.call_internal("identity", "unwrap", timeout=10, key_id=key_id, data=crypto.b64(wrapped))
        return crypto.unb64(str(reply["data"]))

    async def sign(self, data: bytes) -> bytes:
        reply = await self.bus.call_internal("identity", "sign", timeout=10,
                                             data=crypto.b64(hashlib.sha256(data).digest()))
        return crypto.unb64(str(reply["signature"]))

    async def verify(self, data: bytes, signature: bytes, idurl: str) -> bool:
        return bool(await self.bus.call_internal("identity", "verify", timeout=15,
                                                 data=crypto.b64(hashlib.sha256(data).digest()),
                                                 signature=crypto.b64(signature), idurl=idurl))

    async def api(self, process: str, method: str, wait: float = 30, **kwargs: Any) -> Any:
        """Call another process's API method (`wait` bounds the bus call)."""
        return await self.bus.call(subjects.api(process, method), kwargs, timeout=wait)

    async def contact_state(self, idurl: str) -> str:
        try:
            found = await self.api("transport", "user_status", wait=3, user_id=idurl)
        except NodeError:
            return "OFFLINE"
        return str(found.get("contact_state") or "OFFLINE")
