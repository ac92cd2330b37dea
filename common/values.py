"""Reading loosely typed values clients send (query strings, old clients' JSON)."""

from __future__ import annotations

from typing import Any

from common.errors import InvalidArgumentError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def as_bool(value: Any, name: str) -> bool:
    """`value` as a boolean (true/false, 1/0, yes/no, on/off; None is false); raises `InvalidArgumentError`."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidArgumentError(f"{name} must be true or false", reason="invalid_argument")
