"""`python -m services.messaging --home DIR`: the messaging process of a node."""

from common import lean

# Before anything else is imported: see common/lean.py.
lean.skip("aiohttp")  # serves and fetches no HTTP
lean.import_bus_client()
lean.defer("common.crypto")  # cryptography (about 9.5 MB) loads with the first key operation

from common.process import run  # noqa: E402
from services.messaging.service import MessagingService  # noqa: E402

if __name__ == "__main__":
    run("messaging", MessagingService)
