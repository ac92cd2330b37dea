"""Marking the coroutines a process serves on the bus.

`@endpoint()` only tags a method (like nameko's `@rpc`); it stays a plain coroutine that a unit
test can call directly. `common.bus.serve` finds the tagged methods and binds them to
`nats.micro` endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ENDPOINT_ATTR = "__bitdust_endpoint__"


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
