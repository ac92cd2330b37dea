"""The one place that configures logging for a node process."""

from __future__ import annotations

import logging
import sys


def setup(process: str, debug: bool = False) -> None:
    """Log to stderr (supervisord writes it to `<home>/logs/<process>.log`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("aiohttp.access", "kademlia", "rpcudp", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
