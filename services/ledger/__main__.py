"""`python -m services.ledger --home DIR`: the ledger process of a node."""

from common import lean

# Before anything else is imported: see common/lean.py.
lean.skip("aiohttp")  # talks to the engine over a plain socket
lean.import_bus_client()

from common.process import run  # noqa: E402
from services.ledger.service import LedgerService  # noqa: E402

if __name__ == "__main__":
    run("ledger", LedgerService)
