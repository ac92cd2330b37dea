"""`python -m services.storage --home DIR`: the storage process of a node."""

from common import lean

lean.skip("aiohttp")  # before nats is imported: see common/lean.py

from common.process import run  # noqa: E402
from services.storage.service import StorageService  # noqa: E402

if __name__ == "__main__":
    run("storage", StorageService)
