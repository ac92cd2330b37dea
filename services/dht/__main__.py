"""`python -m services.dht --home DIR`: the dht process of a node."""

from common import lean

lean.skip("aiohttp")  # before nats is imported: see common/lean.py

from common.process import run  # noqa: E402
from services.dht.service import DhtService  # noqa: E402

if __name__ == "__main__":
    run("dht", DhtService)
