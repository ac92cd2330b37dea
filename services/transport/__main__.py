"""`python -m services.transport --home DIR`: the transport process of a node."""

from common import lean

lean.skip("aiohttp")  # before nats is imported: see common/lean.py

from common.process import run  # noqa: E402
from services.transport.service import TransportService  # noqa: E402

if __name__ == "__main__":
    run("transport", TransportService)
