"""Benchmark of the identity process: identity creation time and sign/verify throughput.

Run: `.venv/bin/python bench/identity.py [--rounds N]`. Prints a small table:

- `create (keygen+sign)`: RSA key generation plus building and signing the identity document,
  in this process; the baseline of
- `identity_create over bus`: the full API method on a real nats-server, with the identity server
  of the same process accepting the upload over HTTP (fresh home each round, not timed): the same
  key size, one key generation and one signed document per call, one call at a time. The two
  alternate round by round (a local creation, then one over the bus) so both see the same load;
  key generation time varies a lot from key to key, so take the medians as rough;
- `sign`/`verify`: RSA-PSS/SHA-256 of 64 bytes in-process, one after another for a second; the
  first is the baseline of
- `identity.sign over bus`: the same 64 bytes signed with a key of the same size by the identity
  process, one request at a time for a second (no pipelining on either side).
The last column is the ratio to the baseline: time over the bus / time in-process for creation,
rate over the bus / rate in-process for signing.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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


def _rate(func: Callable[[], Any], seconds: float = 1.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        func()
        count += 1
    return count / (time.perf_counter() - start)


def create_local(bits: int) -> float:
    """Seconds of one key generation plus one signed identity document, in this process."""
    start = time.perf_counter()
    key = crypto.generate_private_key(bits)
    document.new_document(["http://127.0.0.1:8084/alice.xml"], ["tcp://127.0.0.1:7771"], key)
    return time.perf_counter() - start


async def create_over_bus(bits: int, index: int) -> float:
    """Seconds of one `identity_create` call on a fresh home (its setup not timed)."""
    with tempfile.TemporaryDirectory() as tmp, nats_server(Path(tmp) / "node") as home:
        port = configure(home, idserver=True, **{"personal/private-key-size": bits})
        async with running_service(home, "identity", IdentityService):
            bus = await connect(home)
            try:
                start = time.perf_counter()
                await bus.call("api.identity.identity_create",
                               {"username": f"bench{index}", "preferred_servers": [f"127.0.0.1:{port}"]},
                               timeout=120)
                return time.perf_counter() - start
            finally:
                await bus.close()


def bench_create(bits: int, rounds: int) -> tuple[list[float], list[float]]:
    """(in-process, over the bus) creation times, alternating round by round."""
    local, over_bus = [], []
    for index in range(rounds):
        local.append(create_local(bits))
        over_bus.append(asyncio.run(create_over_bus(bits, index)))
    return local, over_bus


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
    rows: list[tuple[str, str, str, str]] = []
    for bits in (1024, 2048):
        local, over_bus = bench_create(bits, args.rounds)
        rows.append((f"create (keygen+sign) {bits}", f"{statistics.median(local) * 1000:.1f} ms median",
                     f"{min(local) * 1000:.1f}..{max(local) * 1000:.1f} ms", "baseline"))
        rows.append((f"identity_create over bus {bits}", f"{statistics.median(over_bus) * 1000:.1f} ms median",
                     f"{min(over_bus) * 1000:.1f}..{max(over_bus) * 1000:.1f} ms",
                     f"{statistics.median(over_bus) / statistics.median(local):.2f}x time"))
    for bits in (1024, 2048):
        key = crypto.generate_private_key(bits)
        signature = crypto.sign(key, DATA)
        public = key.public_key()
        in_process = _rate(functools.partial(crypto.sign, key, DATA))
        rows.append((f"sign {bits} in-process", f"{in_process:.0f} ops/s", "sequential", "baseline"))
        rows.append((f"verify {bits} in-process",
                     f"{_rate(functools.partial(crypto.verify, public, DATA, signature)):.0f} ops/s", "sequential", ""))
        over_bus_rate = asyncio.run(bench_sign_bus(bits))
        rows.append((f"identity.sign {bits} over bus", f"{over_bus_rate:.0f} ops/s", "sequential",
                     f"{over_bus_rate / in_process:.2f}x rate"))
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'result':>20}  {'range':<20}  vs baseline")
    for name, result, extra, ratio in rows:
        print(f"{name:<{width}}  {result:>20}  {extra:<20}  {ratio}")


if __name__ == "__main__":
    main()
