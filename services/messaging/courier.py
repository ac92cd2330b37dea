"""Store and forward: delivering sent messages, now or when the recipient comes back.

Every sent message is first recorded as `pending` (store.py); the courier then tries to deliver
it. An attempt seals the message afresh (a new session key each time) and sends it; the
recipient's Ack makes it `delivered`. A failed attempt (recipient offline, its messaging
process down, no Ack in time) leaves it pending with the next attempt after a backoff that
doubles from `BACKOFF_BASE` up to `BACKOFF_MAX`; hearing that the recipient is CONNECTED again
makes its messages due at once. Messages still pending after `message-ttl` become `expired`.

Messages to one recipient are retried in the order they were sent, one at a time; different
recipients are served in parallel. The recipient recognises a message it already has by its id,
so a retry after a lost Ack is acknowledged again and never shown twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable, Protocol

from common.errors import NodeError
from services.messaging.store import DELIVERED, MessageStore, StoredMessage

log = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0
RETRY_PING_TIMEOUT = 10.0
RETRY_ACK_TIMEOUT = 15.0
IDLE_WAKEUP = 60.0


class Wire(Protocol):
    """Sends one sealed message and returns the recipient's reply document (`command`, `payload`).

    Raises a `NodeError` when the recipient cannot be reached or does not answer in time.
    """

    async def deliver(self, recipient: str, payload: dict[str, Any], ping_timeout: float,
                      ack_timeout: float) -> dict[str, Any]: ...


Sealer = Callable[[StoredMessage], Awaitable[dict[str, Any]]]
"""Seals a stored message for its recipient (raises `NodeError` when its key cannot be had)."""


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones."""
    return float(min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(attempts, 16)))


def fail_reason(reply: dict[str, Any]) -> str:
    """The reason a recipient gave in a Fail (a text, or `{"reason": …}`)."""
    payload = reply.get("payload")
    if isinstance(payload, dict):
        return str(payload.get("reason") or payload.get("error") or "refused")
    return str(payload or reply.get("command") or "refused")


class Courier:
    """Delivers the outbox of `store` through `wire`."""

    def __init__(self, store: MessageStore, wire: Wire, seal: Sealer,
                 on_change: Callable[[StoredMessage], Awaitable[None]],
                 enabled: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time):
        self.store = store
        self.wire = wire
        self.seal = seal
        self.on_change = on_change
        self.enabled = enabled
        self.clock = clock
        self._inflight: set[str] = set()
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()

    # ---- one attempt ------------------------------------------------------------------------------

    async def attempt(self, message: StoredMessage, ping_timeout: float = RETRY_PING_TIMEOUT,
                      ack_timeout: float = RETRY_ACK_TIMEOUT) -> StoredMessage:
        """Try to deliver one pending message now; return it as stored afterwards."""
        if message.message_id in self._inflight:
            return message
        self._inflight.add(message.message_id)
        # Not due again while this attempt runs (the retry loop must not spin on it).
        self.store.postpone(message.message_id, self.clock() + ping_timeout + ack_timeout + 5)
        try:
            try:
                reply = await self.wire.deliver(message.recipient, await self.seal(message), ping_timeout,
                                                ack_timeout)
                error = "" if reply.get("command") == "Ack" else fail_reason(reply)
            except NodeError as err:
                reply, error = {}, err.reason
            now = self.clock()
            if not error:
                payload = reply.get("payload")
                consumed = bool(payload.get("consumed")) if isinstance(payload, dict) else False
                self.store.mark_delivered(message.message_id, consumed, now)
            else:
                log.info("message %s to %s not delivered (attempt %d): %s", message.message_id,
                         message.recipient, message.attempts + 1, error)
                self.store.mark_failed_attempt(message.message_id, error, now + backoff(message.attempts), now)
        finally:
            self._inflight.discard(message.message_id)
        stored = self.store.outgoing(message.message_id) or message
        if stored.state == DELIVERED or error:
            await self.on_change(stored)
        self._wakeup.set()
        return stored

    # ---- the retry loop -------------------------------------------------------------------------

    def wake(self, recipient: str | None = None) -> None:
        """Retry now: every pending message of `recipient` (all recipients when None) becomes due."""
        self.store.make_due(recipient, self.clock())
        self._wakeup.set()

    async def run(self) -> None:
        """Expire, then retry what is due, until cancelled."""
        try:
            while True:
                try:
                    await self._round()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the next round tries again
                    log.exception("outbox round failed")
                await self._sleep()
        finally:
            for task in self._runs.values():
                task.cancel()

    async def _sleep(self) -> None:
        due = self.store.next_attempt_at()
        delay = IDLE_WAKEUP if due is None else min(IDLE_WAKEUP, max(0.05, due - self.clock()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), delay)
        self._wakeup.clear()

    async def _round(self) -> None:
        now = self.clock()
        for message in self.store.expire(now):
            log.info("message %s to %s expired undelivered", message.message_id, message.recipient)
            await self.on_change(message)
        if not self.enabled():
            return
        due: dict[str, list[StoredMessage]] = {}
        for message in self.store.pending():
            if message.next_attempt <= now and message.message_id not in self._inflight:
                due.setdefault(message.recipient, []).append(message)
        for recipient, messages in due.items():
            if recipient not in self._runs:
                task = asyncio.ensure_future(self._retry(messages))
                self._runs[recipient] = task
                task.add_done_callback(self._forget_run(recipient))

    def _forget_run(self, recipient: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_task: asyncio.Task[None]) -> None:
            self._runs.pop(recipient, None)

        return forget

    async def _retry(self, messages: list[StoredMessage]) -> None:
        """Attempt one recipient's due messages in order; stop at the first that fails."""
        for position, message in enumerate(messages):
            stored = await self.attempt(message)
            if stored.state != DELIVERED:
                # The recipient is away: the rest wait as long as this one does.
                for later in messages[position + 1:]:
                    self.store.postpone(later.message_id, stored.next_attempt)
                return

    async def drain(self) -> None:
        """Wait for attempts under way (at stop)."""
        runs = list(self._runs.values())
        if runs:
            await asyncio.wait(runs, timeout=5)
