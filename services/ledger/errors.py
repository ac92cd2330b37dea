"""Errors of the ledger beyond those in `common.errors`."""

from __future__ import annotations

from common.errors import NodeError


class ForbiddenError(NodeError):
    """This node may not do that (not a foundation miner, not the supplier of the offer)."""

    status = 403
    reason = "forbidden"
