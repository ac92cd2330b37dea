"""Receiving private messages: what a `Message` packet from another node becomes.

The transport has already checked the packet: signed by its creator, addressed to us, fresh,
not a byte-identical replay. Here the sealed message inside is checked as well: its sender must
be the packet's creator (nobody re-wraps someone else's message), its recipient must be us, its
date within the time to live, its id not seen before from that sender, and its body must open
with our key. Whatever fails is dropped, counted by reason, and answered with a Fail; nothing of
it reaches history or consumers. A message seen before is acknowledged again (its sender may
have missed our Ack) and not shown twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Protocol

from common.errors import NodeError
from services.messaging import envelope
from services.messaging.envelope import EnvelopeError, Sealed
from services.messaging.store import RECEIVED, MessageStore, StoredMessage

log = logging.getLogger(__name__)


class Keyring(Protocol):
    """Our side of the keys: who we are, and opening a message sealed for our master key."""

    async def my_idurl(self) -> str | None: ...

    async def open(self, sealed: Sealed) -> bytes: ...


def ack(**payload: Any) -> dict[str, Any]:
    return {"command": "Ack", "payload": payload}


def fail(reason: str, error: str = "") -> dict[str, Any]:
    return {"command": "Fail", "payload": {"reason": reason, "error": error or reason.replace("_", " ")}}


class MessageInbox:
    """Checks, opens and records arriving private messages; hands new ones to `on_new`."""

    def __init__(self, store: MessageStore, keyring: Keyring, on_new: Callable[[StoredMessage], Awaitable[bool]],
                 max_age: Callable[[], float], clock: Callable[[], float] = time.time):
        self.store = store
        self.keyring = keyring
        self.on_new = on_new
        self.max_age = max_age
        self.clock = clock
        self.dropped: Counter[str] = Counter()
        self.received = 0
        self.duplicates = 0

    async def handle(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The reply (Ack / Fail) to one inbox document of a `Message` packet."""
        creator = str(doc.get("creator_idurl") or "")
        try:
            sealed = envelope.parse(doc.get("payload"))
            me = await self.keyring.my_idurl()
            if not me:
                raise EnvelopeError("no_identity", "this node has no identity")
            header = sealed.header
            envelope.check_header(header, creator, me, self.clock(), self.max_age())
            known = self.store.get(header.sender, header.message_id, "in")
            if known is not None:
                return self._duplicate(known)
            data = envelope.decode_body(await self._open(sealed))
        except EnvelopeError as err:
            self.dropped[err.reason] += 1
            log.warning("Message packet %s from %s dropped: %s", doc.get("packet_id"), creator, err.reason)
            return fail(err.reason, str(err))
        message = StoredMessage(sender=header.sender, message_id=header.message_id, direction="in",
                                recipient=me, msg_type=header.msg_type, time=header.time, data=data,
                                state=RECEIVED, updated=self.clock())
        if not self.store.add(message):
            known = self.store.get(header.sender, header.message_id, "in")
            return self._duplicate(known or message)
        self.received += 1
        consumed = await self.on_new(message)
        return ack(consumed=consumed, message_id=message.message_id)

    def _duplicate(self, known: StoredMessage) -> dict[str, Any]:
        self.duplicates += 1
        self.dropped["replayed"] += 1
        log.info("message %s from %s seen before: acknowledged again, not shown", known.message_id, known.sender)
        return ack(consumed=known.consumed, message_id=known.message_id, duplicate=True)

    async def _open(self, sealed: Sealed) -> bytes:
        try:
            return await self.keyring.open(sealed)
        except NodeError as err:
            if err.status >= 500:
                raise  # the identity process is away: not the sender's fault, let the sender retry
            raise EnvelopeError("undecryptable", "the message was not sealed for our key, or was altered") from None
