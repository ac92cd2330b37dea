"""The messaging process's view of the other processes, over the bus (the edge of its domain code).

identity: who we are, other nodes' public keys, unwrapping a session key with our master key;
dht: nicknames; transport: sending `Message` packets, pinging, presence; api: pushing a message
to WebSocket clients.
"""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from common import crypto, subjects
from common.bus import Bus
from common.errors import InvalidArgumentError, NodeError, NotFoundError
from services.messaging.contacts import ContactStates
from services.transport.peer_ids import idurl_to_global_id, to_idurl

MY_IDENTITY_TTL = 30.0
PUBLIC_KEY_TTL = 60.0
STREAM_TIMEOUT = 1.0


class BusPeers:
    """Identity, DHT, transport and api, as the messaging domain code uses them."""

    def __init__(self, bus: Bus, contacts: ContactStates):
        self.bus = bus
        self.contacts = contacts
        self._me: dict[str, Any] | None = None
        self._me_at = 0.0
        self._keys: dict[str, tuple[float, RSAPublicKey]] = {}

    # ---- identity --------------------------------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        """Our identity summary; raises the identity process's error when there is none."""
        if self._me is None or time.monotonic() - self._me_at > MY_IDENTITY_TTL:
            self._me = dict(await self.bus.call_internal("identity", "my_identity", timeout=5))
            self._me_at = time.monotonic()
        return self._me

    def forget_me(self) -> None:
        self._me = None

    async def my_idurl(self) -> str | None:
        try:
            return str((await self.me())["idurl"])
        except NodeError:
            return None

    async def unwrap(self, wrapped: bytes) -> bytes:
        """A session key unwrapped by our master key (in the identity process)."""
        me = await self.me()
        reply = await self.bus.call_internal("identity", "unwrap", timeout=10, key_id=f"master${me['global_id']}",
                                             data=crypto.b64(wrapped))
        return crypto.unb64(str(reply["data"]))

    async def public_key(self, idurl: str, refresh: bool = False) -> RSAPublicKey:
        """The master public key of `idurl`, from its verified identity (cached a minute).

        Raises:
            NotFoundError: the user's identity cannot be had (`user_not_found`).
        """
        cached = self._keys.get(idurl)
        if cached and not refresh and time.monotonic() - cached[0] < PUBLIC_KEY_TTL:
            return cached[1]
        try:
            doc = await self.bus.call_internal("identity", "fetch", timeout=20, idurl=idurl, refresh=refresh)
            key = crypto.load_public_key(str(doc.get("publickey") or ""))
        except crypto.CryptoError:
            raise NotFoundError(f"identity of {idurl} has no valid key", reason="user_not_found") from None
        except NodeError as err:
            if err.status == 404:
                raise NotFoundError(f"user {idurl_to_global_id(idurl)} was not found", reason="user_not_found") \
                    from None
            raise
        self._keys[idurl] = (time.monotonic(), key)
        return key

    async def resolve(self, user_id: str) -> str:
        """The IDURL of a user named by nickname, global id, key id or IDURL, checked to exist.

        Raises:
            InvalidArgumentError: the text is no kind of user id.
            NotFoundError: nobody is known by it (`user_not_found`).
        """
        text = (user_id or "").strip() if isinstance(user_id, str) else ""
        if not text:
            raise InvalidArgumentError("a user id is required", reason="invalid_argument")
        if "@" not in text and "://" not in text:
            found = await self.bus.call(subjects.api("dht", "user_search"), {"nickname": text}, timeout=30)
            if not isinstance(found, dict) or found.get("result") != "exist" or not found.get("idurl"):
                raise NotFoundError(f"nickname {text} was not found", reason="user_not_found")
            idurl = str(found["idurl"])
        else:
            idurl = to_idurl(text)
        await self.public_key(idurl)
        return idurl

    # ---- transport ---------------------------------------------------------------------------------

    async def deliver(self, recipient: str, payload: dict[str, Any], ping_timeout: float,
                      ack_timeout: float) -> dict[str, Any]:
        """Send a `Message` packet and return the reply; ping first when the peer is not connected."""
        if ping_timeout > 0 and not self.contacts.connected(recipient):
            await self.ping(recipient, ping_timeout)
        # `timeout` is both a parameter of `transport.send` and of the bus call: pass it in the request.
        reply = await self.bus.call(subjects.internal("transport", "send"),
                                    {"remote_idurl": recipient, "command": "Message", "payload": payload,
                                     "timeout": ack_timeout}, timeout=ack_timeout + 5)
        return dict(reply)

    async def presence_snapshot(self) -> list[tuple[str, str]]:
        """(idurl, contact_state) of every peer the transport knows now."""
        items = await self.bus.call_internal("transport", "models", timeout=5, model_name="online_status")
        return [(str(i["id"]), str((i.get("data") or {}).get("contact_state") or "")) for i in items or []]

    async def ping(self, idurl: str, timeout: float) -> None:
        await self.bus.call(subjects.api("transport", "user_ping"), {"user_id": idurl, "timeout": timeout},
                            timeout=timeout + 5)

    # ---- api --------------------------------------------------------------------------------------

    async def stream(self, item: dict[str, Any]) -> int:
        """Push a message to the node's WebSocket clients; how many got it (0 when the api is away)."""
        try:
            reply = await self.bus.call_internal("api", "stream_message", timeout=STREAM_TIMEOUT, payload=item)
        except NodeError:
            return 0
        return int((reply or {}).get("sockets") or 0)

    async def share_key(self, key_id: str, idurl: str) -> None:
        await self.bus.call(subjects.api("identity", "key_share"),
                            {"key_id": key_id, "trusted_user_id": idurl, "include_private": False}, timeout=40)
