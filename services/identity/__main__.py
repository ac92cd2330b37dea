"""`python -m services.identity --home DIR`: the identity process of a node."""

from common import lean

# Before anything else is imported: see common/lean.py.
lean.skip("aiohttp")  # about 12 MB: its identity server and client speak plain HTTP/1.1
lean.import_bus_client()
lean.defer("common.crypto")  # cryptography (about 9.5 MB) loads with the first key read or made
lean.defer("sqlite3")  # the dht, storage and messaging stores use it, not this process

from common.process import run  # noqa: E402
from services.identity.service import IdentityService  # noqa: E402

if __name__ == "__main__":
    run("identity", IdentityService)
