"""Names of identities and keys: IDURL, global id, key id, and the rules a name must follow.

IDURL `http://<host>:<port>/<name>.xml`, global id `name@host_port`, key id
`alias$name@host_port`. Users reach API methods in any of these forms; `to_idurl` turns each into
the IDURL so one helper decides what a user id means. Every process names peers through this module
(the one place for IDURL and global-id conversions); `idurl_of` is the lenient form peers' messages
and API calls are read with, `to_idurl` the strict one for names this node creates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.errors import InvalidArgumentError

USERNAME_RE = re.compile(r"^[a-z][a-z0-9_-]{2,19}$")
"""Lowercase letters, digits, `-` and `_`, 3..20 characters, a letter first (the reference rules)."""

KEY_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
HOST_RE = re.compile(r"^[a-zA-Z0-9.-]{1,253}$")
IDURL_RE = re.compile(r"^http://([a-zA-Z0-9.-]{1,253}):([0-9]{1,5})/([a-z][a-z0-9_-]{2,19})\.xml$")
GLOBAL_ID_RE = re.compile(r"^([a-z][a-z0-9_-]{2,19})@([a-zA-Z0-9.-]{1,253})_([0-9]{1,5})$")
MASTER_ALIAS = "master"
_PEER_NAME_RE = re.compile(r"^[a-zA-Z0-9_.\-]{1,100}$")


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


def idurl_to_global_id(idurl: str) -> str:
    """`http://127.0.0.1:18084/alice.xml` -> `alice@127.0.0.1_18084`."""
    parts = urlsplit(idurl)
    name = parts.path.rsplit("/", 1)[-1].removesuffix(".xml")
    host = parts.hostname or ""
    return f"{name}@{host}_{parts.port}" if parts.port else f"{name}@{host}"


def idurl_of(user_id: str) -> str:
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
    if not sep or not _PEER_NAME_RE.match(name) or not host:
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


def key_signature_payload(key_id: str, public_ssh: str) -> bytes:
    """What a creator signs to vouch for a key: its id and public half."""
    return f"bitdust-key:{key_id}:{public_ssh}".encode()
