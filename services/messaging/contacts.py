"""Who is online, as the transport last said (`model.online_status`), and how a friend is shown.

The transport owns presence; this is the messaging process's copy, fed by the transport's model
updates, so `friends_list` answers without a bus call per friend and the outbox hears at once
when a recipient comes back.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from common.ids import idurl_to_global_id

CONNECTED = "CONNECTED"
OFFLINE = "OFFLINE"

PresenceListener = Callable[[str, str], None]
"""Called with (idurl, new_state) on every change."""


class ContactStates:
    """The last known `contact_state` of every peer the transport reported."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}
        self._listeners: list[PresenceListener] = []

    def listen(self, listener: PresenceListener) -> None:
        self._listeners.append(listener)

    def update(self, idurl: str, state: str) -> None:
        if not idurl or not state or self._states.get(idurl) == state:
            return
        self._states[idurl] = state
        for listener in list(self._listeners):
            listener(idurl, state)

    def state(self, idurl: str) -> str:
        return self._states.get(idurl, OFFLINE)

    def connected(self, idurl: str) -> bool:
        return self._states.get(idurl) == CONNECTED


def friend_info(idurl: str, alias: str, state: str) -> dict[str, Any]:
    """A `friends_list` item with the reference's fields."""
    parts = urlsplit(idurl)
    global_id = idurl_to_global_id(idurl)
    return {
        "idurl": idurl,
        "global_id": global_id,
        "idhost": f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname or ""),
        "username": global_id.split("@", 1)[0],
        "alias": alias,
        "contact_state": state,
        "state": state,
        "id": f"online_{global_id}",
        "name": "OnlineStatus",
    }
