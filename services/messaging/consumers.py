"""`message_receive` consumers: long-poll buffers keyed by `consumer_callback_id`.

A consumer is registered by its first poll and sees the messages that arrive after it, filtered
by direction and message types. A poll returns at once what is waiting, else blocks until a
message comes or its timeout passes. A consumer that lets `MAX_UNCOLLECTED` messages pile up
without polling is dropped (as the API document says); polling again registers it afresh.

Pure asyncio, no bus.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

MAX_UNCOLLECTED = 100
MAX_CONSUMERS = 256
MAX_POLLING_TIMEOUT = 600.0
DIRECTIONS = ("incoming", "outgoing", "all")
CONSUMER_ID_RE = re.compile(r"^[A-Za-z0-9_.:@$-]{1,128}$")


@dataclass
class Consumer:
    """One consumer: its filters, what waits for it, and whether a poll is blocked on it."""

    direction: str
    message_types: frozenset[str]
    buffer: list[dict[str, Any]] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    polling: int = 0

    def wants(self, item: dict[str, Any]) -> bool:
        if self.direction != "all" and item.get("dir") != self.direction:
            return False
        return not self.message_types or item.get("msg_type") in self.message_types


class ConsumerBook:
    """Every `message_receive` consumer of this node."""

    def __init__(self, max_uncollected: int = MAX_UNCOLLECTED, max_consumers: int = MAX_CONSUMERS):
        self.max_uncollected = max_uncollected
        self.max_consumers = max_consumers
        self._consumers: dict[str, Consumer] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._consumers)

    def register(self, consumer_id: str, direction: str, message_types: frozenset[str]) -> Consumer:
        """The consumer `consumer_id`, created (or re-filtered) by this poll.

        Raises:
            OverflowError: too many consumers are registered already.
        """
        consumer = self._consumers.get(consumer_id)
        if consumer is None:
            if len(self._consumers) >= self.max_consumers:
                raise OverflowError("too many message consumers")
            consumer = self._consumers[consumer_id] = Consumer(direction, message_types)
        else:
            consumer.direction, consumer.message_types = direction, message_types
        return consumer

    def push(self, item: dict[str, Any]) -> bool:
        """Hand one message to every consumer that wants it; True when a blocked poll takes it now."""
        taken = False
        for consumer_id, consumer in list(self._consumers.items()):
            if not consumer.wants(item):
                continue
            consumer.buffer.append(item)
            if consumer.polling:
                taken = True
                consumer.wakeup.set()
            elif len(consumer.buffer) >= self.max_uncollected:
                del self._consumers[consumer_id]
                self.dropped += 1
        return taken

    async def poll(self, consumer_id: str, direction: str, message_types: frozenset[str],
                   timeout: float) -> list[dict[str, Any]]:
        """What waits for the consumer, else the first messages to come within `timeout` seconds."""
        consumer = self.register(consumer_id, direction, message_types)
        if not consumer.buffer and timeout > 0:
            consumer.wakeup.clear()
            consumer.polling += 1
            try:
                await asyncio.wait_for(consumer.wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                consumer.polling -= 1
        items, consumer.buffer = consumer.buffer, []
        return items
