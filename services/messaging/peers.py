"""The messaging process's view of the other processes, over the bus (the edge of its domain code).

identity: who we are, other nodes' public keys, sealing and opening messages (it holds the keys and
the cipher, so this process loads neither);
dht: nicknames; transport: sending `Message` packets, pinging, presence; api: pushing a message
to WebSocket clients.

A queue packet for this node itself (a member that is also one of its group's brokers, a creator
that hired itself) never reaches the transport, which refuses to connect a node to itself: it
goes to `local`, the broker of this process, as the same JSON document with us as its creator.

A member's standing long poll to its group's broker (a `fetch` that waits) is no packet in flight
for the user: its packet id starts with `idle_ping:` (`IDLE_PACKET_PREFIX`), the mark the reference
engine gives such polls and its clients skip in `packets_list` while they wait for it to be empty.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from common import codec, packet, subjects
from common.bus import Bus
from common.errors import DeadlineError, InvalidArgumentError, NodeError, NotFoundError
from common.rsa_public import CryptoError, b64, load_public_key, unb64
from services.messaging import envelope
from services.messaging.contacts import ContactStates
from common.ids import idurl_to_global_id, idurl_of

MY_IDENTITY_TTL = 30.0
PUBLIC_KEY_TTL = 60.0
STREAM_TIMEOUT = 1.0
BROKERS_TTL = 30.0
BROKER_POSITIONS = 3
"""Positions read from the DHT (the reference engine's REQUIRED_BROKERS_COUNT)."""
BROKERS_LAYER = 7
"""The DHT layer message brokers announce themselves on (services/dht/layers.py MESSAGE_BROKERS)."""
IDLE_PACKET_PREFIX = "idle_ping:"


def is_long_poll(payload: dict[str, Any]) -> bool:
    """Whether a queue packet is a member's standing poll: a `fetch` the broker holds while idle."""
    wait = payload.get("wait")
    return payload.get("queue") == "fetch" and isinstance(wait, (int, float)) and wait > 0


class BusPeers:
    """Identity, DHT, transport and api, as the messaging domain code uses them."""

    def __init__(self, bus: Bus, contacts: ContactStates):
        self.bus = bus
        self.contacts = contacts
        self._me: dict[str, Any] | None = None
        self._me_at = 0.0
        self._keys: dict[str, tuple[float, str]] = {}
        self._brokers: dict[str, tuple[float, list[tuple[int, str]]]] = {}
        self.local: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        """The broker of this process: where a queue packet to ourselves goes (set by the service)."""

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

    async def seal(self, public_key: str, header: envelope.Header, data: dict[str, Any]) -> dict[str, Any]:
        """The payload of `data` sealed for the holder of `public_key` (by the identity process)."""
        reply = await self.bus.call_internal("identity", "seal", timeout=10, public_key=public_key,
                                             data=b64(codec.dumps(data)), aad=b64(header.aad()))
        return envelope.sealed_payload(header, unb64(str(reply["key"])), unb64(str(reply["body"])))

    async def open(self, sealed: envelope.Sealed, key_id: str | None = None) -> bytes:
        """The plaintext of a sealed message, opened by the identity process with our master key or `key_id`.

        Raises:
            NodeError: 400 `undecryptable` when it was not sealed for that key; 5xx when identity is away.
        """
        reply = await self.bus.call_internal("identity", "open", timeout=10, key_id=key_id, key=b64(sealed.wrapped_key),
                                             body=b64(sealed.body), aad=b64(sealed.header.aad()))
        return unb64(str(reply["data"]))

    async def public_key(self, idurl: str, refresh: bool = False) -> str:
        """The master public key of `idurl` (OpenSSH text), from its verified identity (cached a minute).

        Raises:
            NotFoundError: the user's identity cannot be had (`user_not_found`).
        """
        cached = self._keys.get(idurl)
        if cached and not refresh and time.monotonic() - cached[0] < PUBLIC_KEY_TTL:
            return cached[1]
        try:
            doc = await self.bus.call_internal("identity", "fetch", timeout=20, idurl=idurl, refresh=refresh)
            key = str(doc.get("publickey") or "")
            load_public_key(key)  # refused here, with a clear reason, rather than when sealing
        except CryptoError:
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
            idurl = idurl_of(text)
        await self.public_key(idurl)
        return idurl

    # ---- transport ---------------------------------------------------------------------------------

    async def deliver(self, recipient: str, payload: dict[str, Any], ping_timeout: float,
                      ack_timeout: float, packet_id: str | None = None) -> dict[str, Any]:
        """Send a `Message` packet and return the reply; ping first when the peer is not connected."""
        if ping_timeout > 0 and not self.contacts.connected(recipient):
            await self.ping(recipient, ping_timeout)
        # `timeout` is both a parameter of `transport.send` and of the bus call: pass it in the request.
        reply = await self.bus.call(subjects.internal("transport", "send"),
                                    {"remote_idurl": recipient, "command": "Message", "payload": payload,
                                     "timeout": ack_timeout, "packet_id": packet_id}, timeout=ack_timeout + 5)
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

    # ---- groups and brokers ---------------------------------------------------------------------

    async def request(self, idurl: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A queue packet (`Message`) to a node and its reply document, without a ping first.

        To ourselves it goes straight to our broker: a copy of the payload (as the wire would
        give it), answered within `timeout` like a remote request.
        """
        me = await self.my_idurl()
        if self.local is not None and me is not None and idurl == me:
            try:
                reply = await asyncio.wait_for(self.local(me, codec.loads(codec.dumps(payload))), timeout)
            except asyncio.TimeoutError:
                raise DeadlineError(f"our own broker did not answer in {timeout:g} s", reason="timeout") from None
            return {"command": reply.get("command"), "payload": reply.get("payload")}
        packet_id = IDLE_PACKET_PREFIX + packet.new_packet_id() if is_long_poll(payload) else None
        return await self.deliver(idurl, payload, 0, timeout, packet_id)

    async def brokers(self, creator: str, refresh: bool = False) -> list[tuple[int, str]]:
        """(position, broker IDURL) from the creator's signed `message_broker` records, cached a while."""
        cached = self._brokers.get(creator)
        if cached and not refresh and time.monotonic() - cached[0] < BROKERS_TTL:
            return cached[1]
        replies = await asyncio.gather(*(
            self.bus.call_internal("dht", "read_record", timeout=20, record_type="message_broker",
                                   key=f"{creator}:{position}")
            for position in range(BROKER_POSITIONS)), return_exceptions=True)
        found = []
        for position, reply in enumerate(replies):
            if isinstance(reply, dict) and reply.get("read") == "success" and isinstance(reply.get("value"), dict):
                broker = str(reply["value"].get("broker_idurl") or "")
                if broker and reply["value"].get("customer_idurl") == creator:
                    found.append((position, broker))
        if not found and cached and any(isinstance(r, BaseException) for r in replies):
            return cached[1]  # the dht process is away: keep what we knew
        self._brokers[creator] = (time.monotonic(), found)
        return found

    async def publish_broker(self, creator: str, position: int, broker: str) -> None:
        await self.bus.call_internal("dht", "write_record", timeout=30, record_type="message_broker",
                                     key=f"{creator}:{position}",
                                     value={"customer_idurl": creator, "broker_idurl": broker,
                                            "position": position, "revision": int(time.time())})
        self._brokers.pop(creator, None)

    async def random_brokers(self, count: int) -> list[str]:
        try:
            found = await self.bus.call(subjects.api("dht", "dht_user_random"),
                                        {"layer_id": BROKERS_LAYER, "count": count}, timeout=30)
        except NodeError as err:
            if err.status == 404:  # nobody announced on the layer yet
                return []
            raise
        return [str(i) for i in found or []]

    async def group_key(self, key_id: str) -> dict[str, Any]:
        info = await self.bus.call(subjects.api("identity", "key_get"),
                                   {"key_id": key_id, "include_signature": True}, timeout=10)
        return dict(info)

    async def certify_key(self, key_id: str) -> None:
        """Have our master key sign the key's id and public half (the group certificate)."""
        await self.bus.call(subjects.api("identity", "key_get"), {"key_id": key_id, "generate_signature": True},
                            timeout=20)

    async def sign_with(self, key_id: str | None, data: bytes) -> str:
        reply = await self.bus.call_internal("identity", "sign", timeout=10, key_id=key_id, data=b64(data))
        return str(reply["signature"])

    async def verify_signature(self, idurl: str, data: bytes, signature: str) -> bool:
        return bool(await self.bus.call_internal("identity", "verify", timeout=20, data=b64(data),
                                                 signature=signature, idurl=idurl))

    async def identity_call(self, method: str, timeout: float = 30, **kwargs: Any) -> Any:
        """An API method of the identity process (keys), for the group endpoints."""
        return await self.bus.call(subjects.api("identity", method), kwargs, timeout=timeout)

    async def share_key(self, key_id: str, idurl: str) -> None:
        await self.bus.call(subjects.api("identity", "key_share"),
                            {"key_id": key_id, "trusted_user_id": idurl, "include_private": False}, timeout=40)
