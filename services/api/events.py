"""Event bookkeeping of the gateway: counts, per-consumer long-poll buffers, live subscribers.

Pure asyncio (no bus, no HTTP): the service feeds it every `evt.*` message it sees.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

CONSUMER_BUFFER = 100
CONSUMER_IDLE_SECONDS = 300.0


@dataclass
class Consumer:
    """One `event_listen` consumer: a bounded buffer and the time it last polled."""

    buffer: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CONSUMER_BUFFER))
    waiter: asyncio.Event = field(default_factory=asyncio.Event)
    last_seen: float = field(default_factory=time.monotonic)
    dropped: int = 0


class EventHub:
    """Counts events by id and fans them out to long-poll consumers and live listeners."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._consumers: dict[str, Consumer] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def listen(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `callback(event)` for every event; returns the function that stops it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def feed(self, event: dict[str, Any]) -> None:
        """Record one event (`{"event_id", "data", "created"}`) and deliver it."""
        self.counts[event["event_id"]] += 1
        self._expire_idle()
        for consumer in self._consumers.values():
            if len(consumer.buffer) == consumer.buffer.maxlen:
                consumer.dropped += 1
            consumer.buffer.append(event)
            consumer.waiter.set()
        for callback in list(self._listeners):
            callback(event)

    async def poll(self, consumer_id: str, timeout: float) -> list[dict[str, Any]]:
        """Events for `consumer_id` since its last poll, waiting up to `timeout` for the first."""
        consumer = self._consumers.get(consumer_id)
        if consumer is None:
            consumer = self._consumers[consumer_id] = Consumer()
        consumer.last_seen = time.monotonic()
        if not consumer.buffer:
            consumer.waiter.clear()
            try:
                await asyncio.wait_for(consumer.waiter.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        events = list(consumer.buffer)
        consumer.buffer.clear()
        consumer.waiter.clear()
        consumer.last_seen = time.monotonic()
        return events

    def _expire_idle(self) -> None:
        now = time.monotonic()
        for consumer_id in [c for c, v in self._consumers.items() if now - v.last_seen > CONSUMER_IDLE_SECONDS]:
            del self._consumers[consumer_id]
