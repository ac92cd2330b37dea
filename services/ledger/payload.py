"""What a transaction carries on-chain besides coins: its `operation` and `data`, in one OP_RETURN.

    b"BDL" | version (1 byte, 1) | operation length (1 byte) | operation (ASCII) | data (UTF-8)

`operation` is a short word (`storage`, `offer`, `bid`, `accept`, or empty for a plain transfer);
`data` is free text. The whole record is at most `MAX_PAYLOAD` bytes so that it fits the engine's
`-datacarriersize` (1024 bytes of script, 4 of which are OP_RETURN and the push): longer data is
refused with 400 `data_too_long`, never cut. Any other OP_RETURN (not starting with the magic, or
not decoding) is not ours and is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.errors import InvalidArgumentError

MAGIC = b"BDL"
VERSION = 1
MAX_PAYLOAD = 1000
OPERATION_RE = re.compile(r"^[a-z0-9_-]{0,32}$")


@dataclass(frozen=True)
class Payload:
    """The operation and data of one transaction."""

    operation: str = ""
    data: str = ""


def encode(payload: Payload) -> bytes:
    """The OP_RETURN bytes; raises `InvalidArgumentError` (`invalid_operation`, `data_too_long`)."""
    if not OPERATION_RE.match(payload.operation):
        raise InvalidArgumentError("operation must be up to 32 of a-z 0-9 _ -", reason="invalid_operation")
    operation = payload.operation.encode("ascii")
    raw = MAGIC + bytes([VERSION, len(operation)]) + operation + payload.data.encode("utf-8")
    if len(raw) > MAX_PAYLOAD:
        raise InvalidArgumentError(
            f"operation and data take {len(raw)} bytes on-chain, at most {MAX_PAYLOAD} fit",
            reason="data_too_long")
    return raw


def decode(raw: bytes) -> Payload | None:
    """The payload of our OP_RETURN bytes, or None when they are not ours or do not decode."""
    if len(raw) < 5 or len(raw) > MAX_PAYLOAD or raw[:3] != MAGIC or raw[3] != VERSION:
        return None
    end = 5 + raw[4]
    if end > len(raw):
        return None
    try:
        operation = raw[5:end].decode("ascii")
        data = raw[end:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not OPERATION_RE.match(operation):
        return None
    return Payload(operation, data)


def from_script(script_hex: str) -> bytes | None:
    """The pushed bytes of an `OP_RETURN <push>` output script (hex), or None for any other script."""
    try:
        script = bytes.fromhex(script_hex)
    except ValueError:
        return None
    if len(script) < 2 or script[0] != 0x6A:
        return None
    op, rest = script[1], script[2:]
    if op <= 75:
        length, body = op, rest
    elif op == 0x4C and rest:
        length, body = rest[0], rest[1:]
    elif op == 0x4D and len(rest) >= 2:
        length, body = int.from_bytes(rest[:2], "little"), rest[2:]
    else:
        return None
    return body if len(body) == length else None
