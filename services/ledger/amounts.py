"""Amounts of coin as the API takes them: a number or a numeric string, exact to 8 decimals."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from common.errors import InvalidArgumentError

DECIMALS = 8
QUANTUM = Decimal(1).scaleb(-DECIMALS)
MAX_AMOUNT = Decimal(84_000_000)


def parse_amount(value: Any, name: str = "amount") -> Decimal:
    """A positive amount; raises `InvalidArgumentError` (`invalid_amount`) for anything else.

    Refused: booleans, non-numbers, NaN and infinities, zero or negative, more than 8 decimals
    (never rounded: the caller meant something else), more than all coins there are.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise InvalidArgumentError(f"{name} must be a number", reason="invalid_amount")
    try:
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise InvalidArgumentError(f"{name} must be a number", reason="invalid_amount") from None
    if not amount.is_finite():
        raise InvalidArgumentError(f"{name} must be a number", reason="invalid_amount")
    if amount <= 0:
        raise InvalidArgumentError(f"{name} must be positive", reason="invalid_amount")
    if amount >= MAX_AMOUNT:
        raise InvalidArgumentError(f"{name} is more than all coins there are", reason="invalid_amount")
    if amount != amount.quantize(QUANTUM):
        raise InvalidArgumentError(f"{name} has more than {DECIMALS} decimals", reason="invalid_amount")
    return amount.quantize(QUANTUM)


def as_text(amount: Decimal) -> str:
    """An amount as the API answers it: a fixed-point string with 8 decimals."""
    return f"{amount:.8f}"
