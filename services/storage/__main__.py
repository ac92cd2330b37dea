"""`python -m services.storage --home DIR`: the storage process of a node."""

from common.process import run
from services.storage.service import StorageService

if __name__ == "__main__":
    run("storage", StorageService)
