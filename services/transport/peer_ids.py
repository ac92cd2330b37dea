"""Naming peers: IDURL `http://host:port/name.xml`, global id `name@host_port`, key id
`alias$name@host_port`. Users may be named by any of them in API calls."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from common.errors import InvalidArgumentError

_NAME = re.compile(r"^[a-zA-Z0-9_.\-]{1,100}$")


def idurl_to_global_id(idurl: str) -> str:
    """`http://127.0.0.1:18084/alice.xml` -> `alice@127.0.0.1_18084`."""
    parts = urlsplit(idurl)
    name = parts.path.rsplit("/", 1)[-1].removesuffix(".xml")
    host = parts.hostname or ""
    return f"{name}@{host}_{parts.port}" if parts.port else f"{name}@{host}"


def to_idurl(user_id: str) -> str:
    """The IDURL a user id names (IDURL, global id or key id).

    Raises:
        InvalidArgumentError: the text is none of these forms.
    """
    text = (user_id or "").strip()
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if parts.hostname and parts.path.endswith(".xml"):
            return text
        raise InvalidArgumentError(f"{user_id!r} is not a valid IDURL", reason="invalid_user_id")
    if "$" in text:
        text = text.split("$", 1)[1]
    text = text.split(":", 1)[0]
    name, sep, host = text.partition("@")
    if not sep or not _NAME.match(name) or not host:
        raise InvalidArgumentError(f"{user_id!r} is not a valid user id", reason="invalid_user_id")
    hostname, _, port = host.rpartition("_")
    if hostname and port.isdigit():
        return f"http://{hostname}:{port}/{name}.xml"
    return f"http://{host}/{name}.xml"


def parse_tcp_contact(contact: str) -> tuple[str, int] | None:
    """(host, port) of a `tcp://host:port` contact, or None for other schemes."""
    if not contact.startswith("tcp://"):
        return None
    host, _, port = contact[len("tcp://"):].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)
