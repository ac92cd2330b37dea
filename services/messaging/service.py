"""The messaging process's bus endpoints (its API methods answer 501 until they are built)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from common.endpoint import endpoint
from common.errors import InvalidArgumentError
from common.process import ServiceBase


class MessagingService(ServiceBase):
    """Serves the messaging API methods; until they are built the bus adapter answers 501."""

    @endpoint()
    async def group_info_dht(self, group_creator_id: str) -> list[dict[str, Any]]:
        """The message brokers a group creator published in the DHT (signed `message_broker` records).

        Broker record `n` of a creator lives at key `<creator idurl>:<n>`; the dht process reads
        and verifies it, so a forged record never shows up here.
        """
        creator = (group_creator_id or "").strip()
        if "://" not in creator:
            # A global id `name@host_port` (or a key id `alias$name@host_port`) names an IDURL.
            match = re.match(r"^(?:[^$@]+\$)?([^@$]+)@([^@$:/]+)_([0-9]+)$", creator)
            if not match:
                raise InvalidArgumentError("group_creator_id must be a global id or an IDURL",
                                           reason="invalid_argument")
            name, host, port = match.groups()
            creator = f"http://{host}:{port}/{name}.xml"
        replies = await asyncio.gather(*(
            self.ctx.bus.call_internal("dht", "read_record", record_type="message_broker", key=f"{creator}:{position}")
            for position in range(3)  # the reference engine's REQUIRED_BROKERS_COUNT
        ))
        brokers = []
        for reply in replies:
            if reply.get("read") == "success" and isinstance(reply.get("value"), dict):
                value = dict(reply["value"])
                value.pop("type", None)
                value.pop("key", None)
                brokers.append(value)
        return brokers
