"""Keep heavy modules a process never uses out of its memory.

nats-py imports aiohttp only for its WebSocket transport, which the node's bus never uses; aiohttp
(with yarl, multidict and friends) costs each process about 15 MB of RSS. Processes that do not
serve or fetch HTTP call `skip("aiohttp")` before anything imports nats: the import then fails
inside nats, which treats it as "not installed".
"""

from __future__ import annotations

import sys


def skip(*modules: str) -> None:
    """Make `import <module>` raise ImportError in this process (only if nothing imported it yet)."""
    for name in modules:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
