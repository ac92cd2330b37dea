"""`python -m services.identity --home DIR`: the identity process of a node."""

from common.process import run
from services.identity.service import IdentityService

if __name__ == "__main__":
    run("identity", IdentityService)
