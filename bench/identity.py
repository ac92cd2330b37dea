"""Benchmark of the identity process: identity creation time and sign/verify throughput.

Run: `.venv/bin/python bench/identity.py [--rounds N]`. Prints a small table:

- `create (keygen+sign)`: RSA key generation plus building and signing the identity document;
- `identity_create over bus`: the full API method on a real nats-server, with the identity server
  of the same process accepting the upload over HTTP (fresh home each round);
- `sign`/`verify`: RSA-PSS/SHA-256 of 64 bytes in-process, and `identity.sign` over the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import crypto  # noqa: E402
from services.identity import document  # noqa: E402
from services.identity.service import IdentityService  # noqa: E402
from tests.helpers import connect, nats_server, running_service  # noqa: E402
from tests.service.test_identity_support import configure  # noqa: E402

DATA = b"x" * 64


def _timed(func: Callable[[], Any], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


def _rate(func: Callable[[], Any], seconds: float = 1.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        func()
        count += 1
    return count / (time.perf_counter() - start)


def bench_create_local(bits: int, rounds: int) -> list[float]:
    def create() -> None:
        key = crypto.generate_private_key(bits)
        document.new_document(["http://127.0.0.1:8084/alice.xml"], ["tcp://127.0.0.1:7771"], key)

    return _timed(create, rounds)


async def bench_create_bus(bits: int, rounds: int) -> list[float]:
    times = []
    for index in range(rounds):
        with tempfile.TemporaryDirectory() as tmp, nats_server(Path(tmp) / "node") as home:
            port = configure(home, idserver=True, **{"personal/private-key-size": bits})
            async with running_service(home, "identity", IdentityService):
                bus = await connect(home)
                try:
                    start = time.perf_counter()
                    await bus.call("api.identity.identity_create",
                                   {"username": f"bench{index}", "preferred_servers": [f"127.0.0.1:{port}"]},
                                   timeout=120)
                    times.append(time.perf_counter() - start)
                finally:
                    await bus.close()
    return times


async def bench_sign_bus(bits: int, seconds: float = 1.0) -> float:
    with tempfile.TemporaryDirectory() as tmp, nats_server(Path(tmp) / "node") as home:
        port = configure(home, idserver=True, **{"personal/private-key-size": bits})
        async with running_service(home, "identity", IdentityService):
            bus = await connect(home)
            try:
                await bus.call("api.identity.identity_create",
                               {"username": "bench", "preferred_servers": [f"127.0.0.1:{port}"]}, timeout=120)
                data = crypto.b64(DATA)
                count, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    await bus.call_internal("identity", "sign", data=data)
                    count += 1
                return count / (time.perf_counter() - start)
            finally:
                await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="identity creations per key size")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    for bits in (1024, 2048):
        local = bench_create_local(bits, args.rounds)
        rows.append((f"create (keygen+sign) {bits}", f"{statistics.median(local) * 1000:.1f} ms median",
                     f"{min(local) * 1000:.1f}..{max(local) * 1000:.1f} ms"))
        over_bus = asyncio.run(bench_create_bus(bits, args.rounds))
        rows.append((f"identity_create over bus {bits}", f"{statistics.median(over_bus) * 1000:.1f} ms median",
                     f"{min(over_bus) * 1000:.1f}..{max(over_bus) * 1000:.1f} ms"))
    for bits in (1024, 2048):
        key = crypto.generate_private_key(bits)
        signature = crypto.sign(key, DATA)
        public = key.public_key()
        rows.append((f"sign {bits} in-process", f"{_rate(lambda k=key: crypto.sign(k, DATA)):.0f} ops/s", ""))
        rows.append((f"verify {bits} in-process",
                     f"{_rate(lambda p=public, s=signature: crypto.verify(p, DATA, s)):.0f} ops/s", ""))
        rows.append((f"identity.sign {bits} over bus", f"{asyncio.run(bench_sign_bus(bits)):.0f} ops/s",
                     "sequential"))
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'result':>20}  range")
    for name, result, extra in rows:
        print(f"{name:<{width}}  {result:>20}  {extra}")


if __name__ == "__main__":
    main()
