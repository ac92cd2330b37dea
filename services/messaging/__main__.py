"""`python -m services.messaging --home DIR`: the messaging process of a node."""

from common import lean

# Before anything else is imported: see common/lean.py.
lean.skip("aiohttp")  # serves and fetches no HTTP
lean.import_bus_client()
# cryptography (about 9.5 MB) is never loaded here: the identity process seals and opens messages, and
# membership proofs are checked with common.rsa_public.
lean.skip("cryptography")

from common.process import run  # noqa: E402
from services.messaging.service import MessagingService  # noqa: E402

if __name__ == "__main__":
    run("messaging", MessagingService)
