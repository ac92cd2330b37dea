"""DHT record kinds: their schemas, where they live, how they are signed and checked.

Pure logic, no I/O. A value in the DHT is an *envelope* (JSON text) that wraps the user data:

    {"v": 2, "layer_id": 0, "record_type": "nickname", "key": "alice:0",
     "data": {...}, "published": 1795718943.1, "expire_at": 1795762143.1,
     "publisher": "<hex dht id>", "signature": {"signer": idurl, "key_id": ..., "value": b64}}

`record_type` and `layer_id` are part of the storage key (`storage_key`), so a general value can
never occupy the slot of a nickname, and a layer is a namespace of its own. Typed records carry
an owner signature over `record_signed_bytes(env)`: the place, the data, and `published` and
`expire_at` too, because storing nodes and readers order copies by `published` (`may_replace`).
So nobody but the owner can restamp a record: an old genuine record replayed keeps its old
`published` and loses to every newer one, and a copy stamped ahead fails its signature. A renewed
record is signed again with a fresh `published` (`Directory.renewed`). Envelope version 2; version
1 signed only the data.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from common.errors import InvalidArgumentError

ENVELOPE_VERSION = 2
MAX_ENVELOPE_BYTES = 6000
"""rpcudp refuses requests above 8 KiB; an envelope must fit a STORE request with room to spare."""

DEFAULT_EXPIRE = 60 * 60 * 12
"""The reference engine's KEY_EXPIRE_MAX_SECONDS: general values live 12 hours unless told."""

MAX_EXPIRE = 60 * 60 * 24 * 7
SKIP_VALIDATION = "skip_validation"
LAYER_MEMBERS = "layer_members"
"""The record type of a layer's member buckets (see `members`)."""
MAX_CLOCK_SKEW = 600
"""Seconds a record's `published` may lie ahead of a storing node's clock."""


class RecordError(Exception):
    """A record read from the DHT is malformed, of another kind, or its signature is wrong."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RecordKind:
    """The schema of one record type: required fields, and which fields may name the signer."""

    name: str
    required: tuple[str, ...]
    owner_fields: tuple[str, ...]
    default_expire: int
    renew: bool
    """Whether the publishing node keeps the record alive (republishes with a fresh expiry)."""
    contested: bool = False
    """Whether any user may claim the key (a nickname position): readers then take the claim most
    storing nodes hold (`Directory.read`), not the newest copy they happen to meet."""


KINDS: dict[str, RecordKind] = {
    k.name: k
    for k in (
        RecordKind(SKIP_VALIDATION, (), (), DEFAULT_EXPIRE, False),
        RecordKind("nickname", ("key", "type", "timestamp", "idurl", "nickname", "position"),
                   ("idurl",), 60 * 60 * 24, True, contested=True),
        RecordKind("identity", ("key", "type", "timestamp", "idurl", "identity"), ("idurl",), 60 * 60, True),
        RecordKind("suppliers", ("key", "type", "timestamp", "customer_idurl", "ecc_map", "suppliers", "revision"),
                   ("publisher_idurl", "customer_idurl"), 60 * 60 * 12, True),
        # The ledger's wallet address of a user (`blockchain_transaction_send` to a user id); key: the IDURL.
        RecordKind("wallet", ("key", "type", "timestamp", "idurl", "address"), ("idurl",), 60 * 60 * 24, True),
        RecordKind("message_broker", ("key", "type", "timestamp", "customer_idurl", "broker_idurl", "position"),
                   ("broker_idurl", "customer_idurl"), 60 * 60 * 12, True),
    )
}


def kind(record_type: str) -> RecordKind:
    """The schema of `record_type`; raises `InvalidArgumentError` for an unknown type."""
    found = KINDS.get(record_type)
    if found is None:
        allowed = ", ".join(sorted(KINDS))
        raise InvalidArgumentError(f"record type must be one of: {allowed}", reason="invalid_record_type")
    return found


def storage_key(layer_id: int, record_type: str, key: str) -> bytes:
    """The 160-bit DHT key of a record: layers and record kinds are separate namespaces."""
    return hashlib.sha1(f"{int(layer_id)}:{record_type}:{key}".encode()).digest()


def parse_json_value(value: Any) -> Any:
    """A dict/list/number as given, or a string that parses as JSON; raises `InvalidArgumentError`."""
    if isinstance(value, (dict, list, int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            pass
    raise InvalidArgumentError("input value must be a json", reason="invalid_argument")


def canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signed_bytes(layer_id: int, record_type: str, key: str, data: Any) -> bytes:
    """Where a record lives and what it says: what a layer member signs (its data holds its lifetime)."""
    return canonical({"layer_id": int(layer_id), "record_type": record_type, "key": key, "data": data}).encode()


def record_signed_bytes(env: dict[str, Any]) -> bytes:
    """What a typed record's owner signs: its place, its data, and the times that order and end it."""
    return canonical({"layer_id": int(env["layer_id"]), "record_type": env["record_type"], "key": env["key"],
                      "data": env["data"], "published": env["published"], "expire_at": env["expire_at"]}).encode()


def check_lifetime(env: dict[str, Any]) -> None:
    """Raise `RecordError` when a signed record's expiry is before its publication or too far after it.

    A storing node cannot shorten a signed record's `expire_at` (the owner signed it), so it refuses
    one that would live longer than `MAX_EXPIRE`.
    """
    lifetime = float(env["expire_at"]) - float(env["published"])
    if not 0 < lifetime <= MAX_EXPIRE:
        raise RecordError(f"record lives {lifetime:.0f} s after its publication (at most {MAX_EXPIRE})",
                          "invalid_lifetime")


def complete_data(record_type: str, key: str, data: Any, now: float | None = None) -> Any:
    """Add the fields the reference engine puts in every record (`key`, `type`, `timestamp`)."""
    if not isinstance(data, dict):
        if record_type != SKIP_VALIDATION:
            raise InvalidArgumentError(f"a {record_type} record must be a JSON object", reason="invalid_record")
        return data
    full = dict(data)
    full["key"] = key
    full["type"] = record_type
    if record_type != SKIP_VALIDATION:
        full.setdefault("timestamp", int(now if now is not None else time.time()))
    return full


def check_schema(record_type: str, data: Any) -> None:
    """Raise `RecordError` when `data` lacks a field its kind requires."""
    rk = KINDS.get(record_type)
    if rk is None:
        raise RecordError(f"unknown record type {record_type!r}", "invalid_record_type")
    if rk.name == SKIP_VALIDATION:
        return
    if not isinstance(data, dict):
        raise RecordError(f"a {record_type} record must be an object", "invalid_record")
    missing = [f for f in rk.required if data.get(f) in (None, "")]
    if missing:
        raise RecordError(f"{record_type} record misses {', '.join(missing)}", "invalid_record")
    if data.get("type") != record_type:
        raise RecordError(f"record claims type {data.get('type')!r}, expected {record_type}", "invalid_record")
    if record_type == "suppliers" and not isinstance(data.get("suppliers"), list):
        raise RecordError("suppliers must be a list", "invalid_record")


def allowed_signers(record_type: str, data: dict[str, Any]) -> list[str]:
    """The identities whose signature makes a record of this kind genuine."""
    return [str(data[f]) for f in kind(record_type).owner_fields if data.get(f)]


def make_envelope(layer_id: int, record_type: str, key: str, data: Any, expire_at: float, publisher: str,
                  published: float | None = None, signature: dict[str, str] | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "v": ENVELOPE_VERSION, "layer_id": int(layer_id), "record_type": record_type, "key": key, "data": data,
        "published": published if published is not None else time.time(), "expire_at": float(expire_at),
        "publisher": publisher,
    }
    if signature is not None:
        env["signature"] = signature
    return env


def encode_envelope(env: dict[str, Any]) -> str:
    """JSON text of an envelope; raises `InvalidArgumentError` when it is too large for the DHT."""
    text = canonical(env)
    if len(text.encode()) > MAX_ENVELOPE_BYTES:
        raise InvalidArgumentError(f"value is too large for the DHT (max about {MAX_ENVELOPE_BYTES} bytes)",
                                   reason="value_too_large")
    return text


def decode_envelope(text: Any, now: float | None = None) -> dict[str, Any]:
    """Parse and sanity-check an envelope received from a peer; raises `RecordError`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or len(text.encode()) > MAX_ENVELOPE_BYTES:
        raise RecordError("record is not text or is too large", "malformed_record")
    try:
        env = json.loads(text)
    except ValueError:
        raise RecordError("record is not JSON", "malformed_record") from None
    if not isinstance(env, dict) or env.get("v") != ENVELOPE_VERSION:
        raise RecordError("record has no known envelope", "malformed_record")
    for name, typ in (("layer_id", int), ("record_type", str), ("key", str), ("publisher", str)):
        if not isinstance(env.get(name), typ):
            raise RecordError(f"record field {name} is missing or ill-typed", "malformed_record")
    for name in ("published", "expire_at"):
        if not isinstance(env.get(name), (int, float)) or isinstance(env.get(name), bool):
            raise RecordError(f"record field {name} is missing or ill-typed", "malformed_record")
    if "data" not in env:
        raise RecordError("record has no data", "malformed_record")
    sig = env.get("signature")
    sig_ok = isinstance(sig, dict) and all(isinstance(sig.get(f), str) for f in ("signer", "value"))
    if sig is not None and not sig_ok:
        raise RecordError("record signature block is malformed", "malformed_record")
    current = time.time() if now is None else now
    if env["expire_at"] <= current:
        raise RecordError("record has expired", "expired_record")
    return env


def check_envelope_place(env: dict[str, Any], layer_id: int, record_type: str, key: str) -> None:
    """A record answered for one key must be the record *of* that key, not one copied from elsewhere."""
    if (env["layer_id"], env["record_type"], env["key"]) != (int(layer_id), record_type, key):
        raise RecordError("record belongs to another key, type or layer", "record_mismatch")


def needs_signature(record_type: str) -> bool:
    """Typed records are signed by their owner, layer member entries by their member; plain values are not."""
    return record_type != SKIP_VALIDATION


def may_replace(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a storing node lets `new` overwrite `old` at the same key.

    A signed record can only be replaced by a record of the same signer that is not older, so a
    stranger cannot overwrite a genuine record with an unsigned or differently signed one. Both
    `published` and `expire_at` are signed (`record_signed_bytes`): an old genuine record replayed
    never replaces a newer one, and none restamped gets past the signature check.
    Layer member buckets are merged instead (see `members.merge`).
    """
    old_sig, new_sig = old.get("signature"), new.get("signature")
    if old_sig:
        if not new_sig or new_sig.get("signer") != old_sig.get("signer"):
            return False
    if float(new["published"]) != float(old["published"]):
        return float(new["published"]) > float(old["published"])
    return float(new["expire_at"]) >= float(old["expire_at"])


@dataclass
class Claims:
    """Genuine copies of a contested record (any user may claim the key), counted by signer.

    Storing nodes keep the first claim they meet, so the claim most of them hold is the first one;
    a tie goes to the earlier `published`. Of the chosen signer's copies the newest stands.
    """

    held: Counter[str] = field(default_factory=Counter)
    newest: dict[str, dict[str, Any]] = field(default_factory=dict)
    earliest: dict[str, float] = field(default_factory=dict)

    def add(self, env: dict[str, Any]) -> None:
        """Count one verified copy held by one node."""
        signer, published = str(env["signature"]["signer"]), float(env["published"])
        self.held[signer] += 1
        self.earliest[signer] = min(self.earliest.get(signer, published), published)
        if signer not in self.newest or published > float(self.newest[signer]["published"]):
            self.newest[signer] = env

    @property
    def copies(self) -> int:
        return sum(self.held.values())

    def decided(self, unanswered: int) -> bool:
        """Whether `unanswered` more copies could no longer change the leading claim."""
        counts = sorted(self.held.values(), reverse=True) + [0, 0]
        return counts[0] > counts[1] + unanswered

    def chosen(self) -> dict[str, Any] | None:
        """The newest copy of the claim most nodes hold; None without any copy."""
        if not self.held:
            return None
        signer = max(self.held, key=lambda s: (self.held[s], -self.earliest[s]))
        return self.newest[signer]


# --- user ids -----------------------------------------------------------------------------------

_GLOBAL_ID_RE = re.compile(r"^(?:[^$@]+\$)?([^@$]+)@([^@$:/]+)_([0-9]+)$")
_IDURL_RE = re.compile(r"^https?://([^/:]+)(?::([0-9]+))?/([^/]+?)(?:\.xml)?$")


def idurl_from_id(user_id: str) -> str:
    """An IDURL from an IDURL, a global id `name@host_port` or a key id `alias$name@host_port`."""
    text = (user_id or "").strip()
    if "://" in text:
        return text
    match = _GLOBAL_ID_RE.match(text)
    if not match:
        raise InvalidArgumentError(f"{user_id!r} is not an IDURL or a global id", reason="invalid_argument")
    name, host, port = match.groups()
    return f"http://{host}:{port}/{name}.xml"


def global_id_from_idurl(idurl: str) -> str:
    """`name@host_port` for `http://host:port/name.xml` (empty when it is not an IDURL)."""
    match = _IDURL_RE.match(idurl or "")
    if not match:
        return ""
    host, port, name = match.groups()
    return f"{name}@{host}_{port or 80}"


# --- nicknames ----------------------------------------------------------------------------------

MAX_NICKNAME_POSITIONS = 16
"""Nicknames are not unique: the n-th user to take one writes at `<nickname>:<n>`."""

_NICKNAME_RE = re.compile(r"^[^\s:]{1,64}$")


def check_nickname(nickname: Any) -> str:
    if not isinstance(nickname, str) or not _NICKNAME_RE.match(nickname):
        raise InvalidArgumentError("nickname must be 1-64 characters without spaces or ':'",
                                   reason="invalid_argument")
    return nickname


def nickname_key(nickname: str, position: int) -> str:
    return f"{nickname}:{position}"


def nickname_data(nickname: str, position: int, idurl: str) -> dict[str, Any]:
    return {"type": "nickname", "idurl": idurl, "nickname": nickname, "position": str(position)}


def message_broker_key(customer_idurl: str, position: int) -> str:
    """Key of broker record `position` of a group creator (read by messaging's group_info_dht)."""
    return f"{customer_idurl}:{position}"
