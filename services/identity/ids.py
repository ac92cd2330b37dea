"""Names of identities and keys: IDURL, global id, key id, and the rules a name must follow.

IDURL `http://<host>:<port>/<name>.xml`, global id `name@host_port`, key id
`alias$name@host_port`. Users reach API methods in any of these forms; `to_idurl` turns each into
the IDURL so one helper decides what a user id means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.errors import InvalidArgumentError

USERNAME_RE = re.compile(r"^[a-z][a-z0-9_-]{2,19}$")
"""Lowercase letters, digits, `-` and `_`, 3..20 characters, a letter first (the reference rules)."""

KEY_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
HOST_RE = re.compile(r"^[a-zA-Z0-9.-]{1,253}$")
IDURL_RE = re.compile(r"^http://([a-zA-Z0-9.-]{1,253}):([0-9]{1,5})/([a-z][a-z0-9_-]{2,19})\.xml$")
GLOBAL_ID_RE = re.compile(r"^([a-z][a-z0-9_-]{2,19})@([a-zA-Z0-9.-]{1,253})_([0-9]{1,5})$")
MASTER_ALIAS = "master"


@dataclass(frozen=True)
class IdUrl:
    """A parsed IDURL."""

    host: str
    port: int
    name: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/{self.name}.xml"

    @property
    def global_id(self) -> str:
        return f"{self.name}@{self.host}_{self.port}"

    @property
    def server(self) -> str:
        """The identity server that serves it, as `host:port`."""
        return f"{self.host}:{self.port}"

    def key_id(self, alias: str = MASTER_ALIAS) -> str:
        return f"{alias}${self.global_id}"


def check_username(name: object) -> str:
    """The name if it is a valid identity name; raises `InvalidArgumentError`."""
    if not isinstance(name, str) or not USERNAME_RE.match(name):
        raise InvalidArgumentError(
            "username must be 3 to 20 characters: lowercase letters, digits, '-' or '_', starting with a letter"
        )
    return name


def check_key_alias(alias: object) -> str:
    """The alias if it is valid for a key; raises `InvalidArgumentError`."""
    if not isinstance(alias, str) or not KEY_ALIAS_RE.match(alias):
        raise InvalidArgumentError("key alias must be 1 to 64 characters: lowercase letters, digits, '_', '-', '.'")
    return alias


def parse_idurl(text: str) -> IdUrl:
    """Parse an IDURL; raises `InvalidArgumentError`."""
    match = IDURL_RE.match(text or "") if isinstance(text, str) else None
    if not match or not 0 < int(match.group(2)) < 65536:
        raise InvalidArgumentError(f"not a valid IDURL: {text!r}")
    return IdUrl(match.group(1), int(match.group(2)), match.group(3))


def parse_global_id(text: str) -> IdUrl:
    """Parse `name@host_port`; raises `InvalidArgumentError`."""
    match = GLOBAL_ID_RE.match(text or "") if isinstance(text, str) else None
    if not match or not 0 < int(match.group(3)) < 65536:
        raise InvalidArgumentError(f"not a valid global id: {text!r}")
    return IdUrl(match.group(2), int(match.group(3)), match.group(1))


def split_key_id(key_id: str) -> tuple[str, IdUrl]:
    """(alias, owner) of `alias$name@host_port`; raises `InvalidArgumentError`."""
    if not isinstance(key_id, str) or key_id.count("$") != 1:
        raise InvalidArgumentError(f"not a valid key id: {key_id!r}", reason="invalid_key_id")
    alias, owner = key_id.split("$")
    if not KEY_ALIAS_RE.match(alias):
        raise InvalidArgumentError(f"not a valid key id: {key_id!r}", reason="invalid_key_id")
    try:
        return alias, parse_global_id(owner)
    except InvalidArgumentError:
        raise InvalidArgumentError(f"not a valid key id: {key_id!r}", reason="invalid_key_id") from None


def to_idurl(user_id: str) -> IdUrl:
    """A user given as IDURL, global id or key id (`alias$name@host_port`), as its IDURL."""
    if not isinstance(user_id, str) or not user_id:
        raise InvalidArgumentError("user id must be an IDURL, a global id or a key id")
    if user_id.startswith("http://"):
        return parse_idurl(user_id)
    if "$" in user_id:
        return split_key_id(user_id)[1]
    return parse_global_id(user_id)


def server_url(server: str, name: str) -> str:
    """The IDURL of `name` on identity server `host:port`; raises `InvalidArgumentError`."""
    return parse_idurl(f"http://{normalize_server(server)}/{name}.xml").url


def normalize_server(server: object) -> str:
    """`host:port` from `host:port` or `http://host:port[/]`; raises `InvalidArgumentError`."""
    if not isinstance(server, str):
        raise InvalidArgumentError(f"identity server must be host:port, not {server!r}")
    text = server.strip().removeprefix("http://").rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not HOST_RE.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgumentError(f"identity server must be host:port, not {server!r}")
    return f"{host}:{int(port)}"
