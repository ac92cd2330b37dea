"""`python -m services.transport --home DIR`: the transport process of a node."""

from common.process import run
from services.transport.service import TransportService

if __name__ == "__main__":
    run("transport", TransportService)
