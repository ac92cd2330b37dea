"""Keep heavy modules a process never uses, or does not use yet, out of its memory.

Every process is a Python interpreter of its own, so each module it imports costs RSS once per
process: aiohttp (with yarl, multidict and friends) about 12 MB, `cryptography` about 9.5 MB (its Rust
extension with OpenSSL, mapped once a key is used).

- `skip(name)`: the import of `name` fails in this process, as if it were not installed. nats-py
  imports aiohttp only for its WebSocket transport, which the node's bus never uses; processes
  that neither serve nor fetch HTTP skip it before anything imports nats.
- `import_bus_client()`: nats-py without what the bus never uses, whatever the process.
- `import_without_ca_store(name)`: import a module that builds TLS client contexts at import
  time (aiohttp) without reading the system's CA bundle into each; the process makes its own
  context when it first dials HTTPS.
- `defer(name)`: a module the process needs only for some of its work (`common.crypto` before
  the node has a key to use) is imported by the first use of one of its attributes, not by the
  `import` statements that name it. Modules that take their names from it at import time
  (`from cryptography… import RSAPublicKey`) load it at once: keep those under `TYPE_CHECKING`.

`services/<name>/__main__.py` makes these choices for its process, before its other imports.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any

BUS_CLIENT = "nats"
BUS_CLIENT_UNUSED = ("aiohttp", "importlib.metadata")
"""What nats-py imports and the bus never uses: aiohttp for the WebSocket transport, and
importlib.metadata (with email, zipfile, csv…) only to send its own version to the server, which
then reads "0.0.0" (nats-py's own fallback)."""
BUS_CLIENT_DEFERRED = ("nats.js",)
"""JetStream, which the node does not use; nats-py reads one header name from it when a message
with headers arrives, and that first read imports it."""


def skip(*modules: str) -> None:
    """Make `import <module>` raise ImportError in this process (only if nothing imported it yet)."""
    for name in modules:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def import_bus_client() -> None:
    """Import nats-py lean; call before anything imports nats (the first lines of `__main__`).

    The unused modules are hidden only while nats-py is imported: the process may still import
    them for its own use (the identity server's aiohttp). Those it skipped stay skipped.
    """
    if BUS_CLIENT in sys.modules:
        return
    hidden = [name for name in BUS_CLIENT_UNUSED if name not in sys.modules]
    skip(*hidden)
    try:
        defer(*BUS_CLIENT_DEFERRED)  # the stand-ins go in first: importing nats must find them
        importlib.import_module(BUS_CLIENT)
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


CA_STORE_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")
"""Where OpenSSL looks for the system's CA certificates, read each time a context loads them."""


def import_without_ca_store(name: str) -> None:
    """Import `name` with OpenSSL's default CA locations pointed at nothing.

    aiohttp makes two TLS client contexts when it is imported, and each reads the system's CA
    bundle: 0.05 s of the API gateway's start and about 1 MB of its RSS, for a process that serves
    HTTP and dials HTTPS only for `network_create`.
    Those contexts then trust no certificate, so a request that does not pass a context of its own
    (`ssl.create_default_context()`, made after this) fails its certificate check rather than
    skipping it.
    """
    saved = {variable: os.environ.get(variable) for variable in CA_STORE_VARIABLES}
    os.environ.update(dict.fromkeys(CA_STORE_VARIABLES, os.devnull))
    try:
        importlib.import_module(name)
    finally:
        for variable, value in saved.items():
            if value is None:
                del os.environ[variable]
            else:
                os.environ[variable] = value


def defer(*modules: str) -> None:
    """Import each of `modules` only when one of its attributes is first read (if not imported yet).

    A stand-in takes the module's place in `sys.modules`, so `import x` and `from pkg import x`
    bind it; the first attribute read imports the real module, and the stand-in becomes a copy.
    """
    for name in modules:
        if name in sys.modules:
            continue
        stand_in = _Deferred(name)
        sys.modules[name] = stand_in
        package, _, child = name.rpartition(".")
        if package:
            # An import finds the stand-in in sys.modules and, unlike a load, does not bind it on
            # its package; `from pkg import x` and `pkg.x` need that binding.
            setattr(importlib.import_module(package), child, stand_in)


class _Deferred(types.ModuleType):
    """Stands for a module until one of its attributes is read, then becomes a copy of it."""

    def __getattr__(self, attr: str) -> Any:
        # Any read of what the stand-in lacks loads the module, dunders too: `__path__` tells the
        # import system that `from pkg import sub` must import a submodule.
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]  # stood in sys.modules: make way for the real module
        module = importlib.import_module(self.__name__)
        # Later reads hit this namespace directly: a deferred module costs nothing once loaded.
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)
