"""`<home>/logs/event.log`: one line per event, for clients that follow a file instead of a socket.

Each line is `<UTC time>  <event_id>  <data as JSON>`, the event id second as in the reference
engine's log; the file rotates at `MAX_BYTES` keeping `BACKUPS` older files.
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any

from common import codec

MAX_BYTES = 1024 * 1024
BACKUPS = 3
MAX_DATA_CHARS = 4000
"""Longer event data is cut in the log (the WebSocket and `event_listen` carry it whole)."""


class EventLog:
    """Appends events to a rotating file; writing never raises into the caller."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                             encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, event: dict[str, Any]) -> None:
        created = float(event.get("created") or time.time())
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"
        try:
            data = codec.dumps(event.get("data")).decode()
        except (TypeError, ValueError):
            data = repr(event.get("data"))
        if len(data) > MAX_DATA_CHARS:
            data = data[:MAX_DATA_CHARS] + "…"
        line = f"{stamp}  {event.get('event_id')}  {data}".replace("\n", " ")
        self._handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

    def close(self) -> None:
        self._handler.close()
