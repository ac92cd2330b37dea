"""Marking the coroutines a process serves on the bus.

`@endpoint()` only tags a method (like nameko's `@rpc`); it stays a plain coroutine that a unit
test can call directly. `common.bus.serve` finds the tagged methods and binds them to
`nats.micro` endpoints.
"""

from __future__ import annotations

import dis
import inspect
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ENDPOINT_ATTR = "__bitdust_endpoint__"
# The opcodes of `await`, `async for` and `async with`: the only places a coroutine can suspend.
_SUSPENDING_OPS = frozenset(dis.opmap[name] for name in (
    "GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH", "SEND", "YIELD_VALUE") if name in dis.opmap)


@dataclass(frozen=True)
class EndpointSpec:
    """What a tagged method serves: an API method name, or an internal verb."""

    name: str
    internal: bool


@dataclass
class Reply:
    """A result with the reference engine's optional human `message` beside it."""

    result: Any = None
    message: str | list[str] | None = None


def endpoint(name: str | None = None, *, internal: bool = False) -> Callable[[F], F]:
    """Tag a coroutine as API method `name` (default: its own name) or internal verb."""

    def mark(func: F) -> F:
        setattr(func, ENDPOINT_ATTR, EndpointSpec(name or func.__name__, internal))
        return func

    return mark


def tagged_endpoints(handler: object) -> dict[EndpointSpec, Callable[..., Any]]:
    """Every tagged bound method of `handler`, keyed by its spec."""
    found: dict[EndpointSpec, Callable[..., Any]] = {}
    for attr in dir(type(handler)):
        func = getattr(type(handler), attr, None)
        spec = getattr(func, ENDPOINT_ATTR, None)
        if isinstance(spec, EndpointSpec):
            found[spec] = getattr(handler, attr)
    return found


def never_suspends(func: Callable[..., Any]) -> bool:
    """True for a coroutine function with no `await`, `async for` or `async with` in its body.

    Such a coroutine runs to its end the first time it is stepped, so the bus adapter can answer it
    in the subscription's own task, with no task spawned per request: nothing it does can make the
    next request to the endpoint wait. Conservative: a wrapped or non-coroutine callable is False.
    """
    target = getattr(func, "__func__", func)
    if not inspect.iscoroutinefunction(target) or hasattr(target, "__wrapped__"):
        return False
    # Wordcode: every instruction is an (opcode, argument) pair of bytes. Read at start-up for every
    # endpoint, so the raw bytes rather than `dis.get_instructions` (0.1 ms an endpoint).
    return _SUSPENDING_OPS.isdisjoint(target.__code__.co_code[::2])
