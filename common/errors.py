"""The error types of the node: one root, a stable reason code and an HTTP status each.

Errors are raised, never returned; the bus adapter and the gateway are the only places that
turn them into wire envelopes (`to_wire`) and back (`from_wire`).
"""

from __future__ import annotations

from typing import Any


class NodeError(Exception):
    """Root of every error the node reports to a client."""

    status: int = 500
    reason: str = "internal_error"

    def __init__(self, message: str = "", *, reason: str | None = None, status: int | None = None):
        super().__init__(message or self.reason.replace("_", " "))
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason

    def to_wire(self) -> dict[str, Any]:
        """The error as carried on the bus: message, reason and status."""
        return {"error": {"message": self.message, "reason": self.reason, "status": self.status}}


class InvalidArgumentError(NodeError):
    """A parameter is missing, ill-typed or has a value that is not allowed."""

    status = 400
    reason = "invalid_argument"


class AuthError(NodeError):
    """The API secret is missing (401) or wrong (403)."""

    status = 401
    reason = "unauthorized"


class NotFoundError(NodeError):
    """The object a parameter names does not exist; `reason` says which kind of object."""

    status = 404
    reason = "not_found"


class ConflictError(NodeError):
    """The request conflicts with the current state (name taken, already exists, ...)."""

    status = 409
    reason = "conflict"


class NotBuiltError(NodeError):
    """The capability behind this method is not built yet."""

    status = 501
    reason = "not_implemented"


class UnavailableError(NodeError):
    """The process that serves the request is down, restarting or switched off."""

    status = 503
    reason = "service_unavailable"


class DeadlineError(NodeError):
    """The request did not complete in time."""

    status = 504
    reason = "timeout"


def from_wire(payload: dict[str, Any]) -> NodeError:
    """Rebuild an error that crossed the bus as `NodeError.to_wire()` produced it."""
    err = payload.get("error") or {}
    return NodeError(
        str(err.get("message") or "error"),
        reason=str(err.get("reason") or "internal_error"),
        status=int(err.get("status") or 500),
    )
