"""`python -m services.dht --home DIR`: the dht process of a node."""

from common.process import run
from services.dht.service import DhtService

if __name__ == "__main__":
    run("dht", DhtService)
