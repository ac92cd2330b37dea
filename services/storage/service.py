"""The storage process's bus endpoints (its API methods answer 501 until they are built)."""

from __future__ import annotations

from common.process import ServiceBase


class StorageService(ServiceBase):
    """Serves the storage API methods; until they are built the bus adapter answers 501."""
