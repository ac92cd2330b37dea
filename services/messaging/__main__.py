"""`python -m services.messaging --home DIR`: the messaging process of a node."""

from common.process import run
from services.messaging.service import MessagingService

if __name__ == "__main__":
    run("messaging", MessagingService)
