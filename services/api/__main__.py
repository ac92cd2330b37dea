"""`python -m services.api --home DIR`: the API gateway process of a node."""

from common.process import run
from services.api.service import ApiService

if __name__ == "__main__":
    run("api", ApiService)
