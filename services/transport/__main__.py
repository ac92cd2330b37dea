"""`python -m services.transport --home DIR`: the transport process of a node."""

from common import lean

# Before anything else is imported: see common/lean.py.
lean.skip("aiohttp")  # serves and fetches no HTTP
lean.import_bus_client()
lean.defer("sqlite3")  # the dht, storage and messaging stores use it, not this process
lean.defer("common.crypto")  # cryptography (about 9.5 MB) loads with the first peer key checked

from common.process import run  # noqa: E402
from services.transport.service import TransportService  # noqa: E402

if __name__ == "__main__":
    run("transport", TransportService)
