"""`python -m services.dht --home DIR`: the dht process of a node."""

from common import lean

# Before anything else is imported: see common/lean.py.
lean.skip("aiohttp")  # serves and fetches no HTTP
lean.import_bus_client()
lean.skip("cryptography")  # about 9.5 MB: it checks signatures with common.rsa_public

from common.process import run  # noqa: E402
from services.dht.service import DhtService  # noqa: E402

if __name__ == "__main__":
    run("dht", DhtService)
