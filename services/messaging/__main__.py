"""`python -m services.messaging --home DIR`: the messaging process of a node."""

from common import lean

lean.skip("aiohttp")  # before nats is imported: see common/lean.py

from common.process import run  # noqa: E402
from services.messaging.service import MessagingService  # noqa: E402

if __name__ == "__main__":
    run("messaging", MessagingService)
