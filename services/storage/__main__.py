"""`python -m services.storage --home DIR`: the storage process of a node."""

from common import lean

# Before anything else is imported: see common/lean.py.
lean.skip("aiohttp")  # serves and fetches no HTTP
lean.import_bus_client()
lean.defer("common.crypto")  # cryptography (about 9.5 MB) loads with the first key operation

from common.process import run  # noqa: E402
from services.storage.service import StorageService  # noqa: E402

if __name__ == "__main__":
    run("storage", StorageService)
