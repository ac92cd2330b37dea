"""`python -m services.api --home DIR`: the API gateway process of a node."""

from common import lean

# Before anything else is imported: see common/lean.py.
lean.import_bus_client()
lean.import_without_ca_store("aiohttp")  # it dials HTTPS only for network_create, with a context of its own
lean.defer("sqlite3")  # the dht, storage and messaging stores use it, not this process

from common.process import run  # noqa: E402
from services.api.service import ApiService  # noqa: E402

if __name__ == "__main__":
    run("api", ApiService)
