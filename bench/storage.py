"""Storage throughput across a real local network: upload and download through node 1's REST API.

Starts N nodes with identities (`deploy.localnet.up`); node 1 is the customer with 4 suppliers
(2-of-4, `ecc/4x4`). For each size in `--sizes` a random file is written (4 MiB chunks, each one
distinct), then measured:
- upload: `file_upload_start(wait_result=true)` -> MiB/s;
- download: `file_download_start(wait_result=true)` into a fresh folder -> MiB/s, sha256 checked;
- peak RSS of the customer's storage process while the upload runs (sampled every 0.1 s);
- CPU ms per MiB (utime + stime from /proc) of every process of every node (the nats-server `bus`
  included), and of the customer's storage process alone.
Like-with-like baselines, in this process right after each measurement, on the same disk: the
disk work of the same transfer without network, processes or crypto (`PlainStore`).
- plain upload: the test file read one block (`services/backups/block-size`) at a time, each block
  cut into 2-of-4 fragments of the size `blocks.seal` makes (the parity two stand-ins of the same
  size), the four stored at once into four plain stores, `services/backups/upload-window` blocks
  in flight. A plain store keeps a fragment durably the way a supplier's `FragmentStore.store`
  does: spool file written and fsynced, renamed into its folder, the folder fsynced, one row
  committed to sqlite (WAL, synchronous=FULL) under a write lock. So the baseline writes twice the
  file's bytes with the same syncs per fragment, as the upload does.
- plain download: the two primary fragments of every block read back from the plain stores at
  once, `min(upload-window, DOWNLOAD_BUFFER / block)` blocks in flight as in `Transfers.download`,
  each block written in order past the page cache (`spool.write_at`) into a temporary file that is
  then truncated, fsynced, renamed and its folder fsynced; its sha256 is checked.
Upload and plain upload both read the test file from the page cache (it was just written).
Reported for reference, not as a ratio: a copy of each test file on the same disk
(`shutil.copyfile`, one fsync at the end: half the bytes of the upload, one sync in all).
Also in the same run, on a 4 MiB block of the same data, in this process: AES-256-GCM encrypt,
zfec encode 2-of-4, `blocks.seal` (AES + zfec + sha256), zfec decode from the two secondary
shares, sha256 (CPU costs, next to the transfer rates).

Run: .venv/bin/python bench/storage.py [--sizes 100M,1G] [--nodes 6] [--port-offset 24000] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zfec  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from common import spool  # noqa: E402
from common.fsutil import fsync_dir  # noqa: E402
from common.packet import MAX_BLOCK_SIZE  # noqa: E402
from deploy import localnet  # noqa: E402
from services.storage import blocks  # noqa: E402
from services.storage.transfers import DOWNLOAD_BUFFER  # noqa: E402
from tests.e2e.client import NodeClient  # noqa: E402
from tests.helpers import sha256_file  # noqa: E402

OFFSET = 24000
"""Default port offset; every port stays below the ephemeral range (32768+), where a dial can self-connect."""
MIB = 1024 * 1024
CHUNK = 4 * MIB
PAGE = 4096
SUPPLIERS = 4
OPTIONS: dict[str, str] = {}
"""Options given with --set, applied to the customer before the run."""
CUSTOMER = 1
LONG = 1200.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
AIMS = "aims: upload >= 160 MiB/s, download >= 240 MiB/s, customer storage RSS < 150 MB " \
       "(Tahoe-LAFS 1.20 2-of-4 here: 54 / 80 MiB/s)"


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def label_of(size: int) -> str:
    if size % (1024 * MIB) == 0:
        return f"{size // (1024 * MIB)}G"
    if size % MIB == 0:
        return f"{size // MIB}M"
    return str(size)


def make_file(path: Path, size: int) -> tuple[str, bytes]:
    """Write `size` random bytes in 4 MiB chunks; return (sha256, the first chunk).

    One random buffer is reused, with a fresh 16-byte stamp at the start of every 4 KiB page of
    every chunk, so no page (let alone a chunk) repeats anywhere in the file."""
    buf = bytearray(os.urandom(CHUNK))
    digest = hashlib.sha256()
    first = b""
    written = 0
    with open(path, "wb") as handle:
        index = 0
        while written < size:
            stamps = os.urandom(16 * (CHUNK // PAGE))
            for page in range(CHUNK // PAGE):
                buf[page * PAGE:page * PAGE + 16] = stamps[page * 16:page * 16 + 16]
            part = memoryview(buf)[:min(CHUNK, size - written)]
            if index == 0:
                first = bytes(part)
            handle.write(part)
            digest.update(part)
            written += len(part)
            index += 1
    return digest.hexdigest(), first


def plain_copy(src: Path, dst: Path) -> float:
    """MiB/s of shutil.copyfile + one fsync (a reference: half the bytes of an upload, one sync)."""
    began = time.perf_counter()
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    took = time.perf_counter() - began
    size = src.stat().st_size
    dst.unlink()
    return size / MIB / took


class PlainStore:
    """A supplier's durable write of one fragment, and its read, with nothing else around them.

    `store` makes the syscalls `FragmentStore.store` makes for a new fragment: the spool file
    written and fsynced, renamed into the fragments folder, the folder fsynced, then one row
    committed to sqlite (WAL, synchronous=FULL) under the store's write lock."""

    def __init__(self, root: Path):
        self.spool, self.fragments = root / "spool", root / "fragments"
        self.spool.mkdir(parents=True)
        self.fragments.mkdir()
        self._db = sqlite3.connect(root / "index.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE objects (name TEXT PRIMARY KEY, size INTEGER)")
        self._write_lock = threading.Lock()

    def store(self, name: str, data: bytes) -> None:
        spooled = self.spool / name
        with open(spooled, "wb", buffering=0) as handle:
            view = memoryview(data)
            while view:
                view = view[handle.write(view) or 0:]
            os.fsync(handle.fileno())
        os.replace(spooled, self.fragments / name)
        fsync_dir(self.fragments)
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?)", (name, len(data)))
            self._db.execute("COMMIT")

    def read(self, name: str) -> bytes:
        return (self.fragments / name).read_bytes()

    def close(self) -> None:
        self._db.close()


def plain_fragments(block: bytes, suppliers: int) -> list[bytes]:
    """The block cut into k primaries of the size `blocks.seal` makes, padded; the parity
    fragments are stand-ins of the same size (their content does not matter to the disk)."""
    k = blocks.data_shares(suppliers)
    share = blocks.sealed_size(len(block), suppliers) // k
    padded = block + bytes(share * k - len(block))
    primaries = [padded[i * share:(i + 1) * share] for i in range(k)]
    return [primaries[pos % k] for pos in range(suppliers)]


def plain_upload(src: Path, stores: list[PlainStore], block_size: int, window: int) -> float:
    """MiB/s of `src` stored 2-of-4 into `stores`, a block at a time, `window` blocks in flight."""
    gate = threading.Semaphore(window)
    with ThreadPoolExecutor(window, "plain-block") as per_block, \
            ThreadPoolExecutor(window * len(stores), "plain-store") as per_fragment:

        def one_block(number: int, fragments: list[bytes]) -> None:
            try:
                for done in [per_fragment.submit(store.store, f"{number}-{pos}", fragment)
                             for pos, (store, fragment) in enumerate(zip(stores, fragments, strict=True))]:
                    done.result()
            finally:
                gate.release()

        began = time.perf_counter()
        running = []
        with open(src, "rb") as handle:
            number = 0
            while True:
                gate.acquire()
                block = handle.read(block_size)
                if not block:
                    gate.release()
                    break
                running.append(per_block.submit(one_block, number, plain_fragments(block, len(stores))))
                number += 1
        for job in running:
            job.result()
        took = time.perf_counter() - began
    return src.stat().st_size / MIB / took


def plain_download(stores: list[PlainStore], size: int, block_size: int, window: int, dest: Path,
                   sha: str) -> float:
    """MiB/s of the file `plain_upload` stored, rebuilt from the primary fragments into `dest`."""
    window = max(1, min(window, DOWNLOAD_BUFFER // max(1, block_size)))
    k = blocks.data_shares(len(stores))
    staging = spool.StagingBuffers()
    tmp = dest.parent / f".{dest.name}.part"
    pending: deque[tuple[int, list[Future[bytes]]]] = deque()
    done = 0
    with ThreadPoolExecutor(window * k, "plain-fetch") as pool:
        began = time.perf_counter()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:

            def write_next() -> None:
                nonlocal done
                plain_size, parts = pending.popleft()
                block = b"".join(part.result() for part in parts)[:plain_size]
                spool.write_at(fd, block, done, staging)
                done += len(block)

            for number in range(-(-size // block_size)):
                plain_size = min(block_size, size - number * block_size)
                pending.append((plain_size, [pool.submit(stores[pos].read, f"{number}-{pos}") for pos in range(k)]))
                if len(pending) >= window:
                    write_next()
            while pending:
                write_next()
            os.ftruncate(fd, done)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        took = time.perf_counter() - began
    if sha256_file(dest) != sha:
        raise SystemExit(f"PLAIN DOWNLOAD CORRUPT: {dest}")
    dest.unlink()
    return size / MIB / took


def plain_transfers(path: Path, sha: str, work: Path, block_size: int, window: int) -> tuple[float, float]:
    """(upload, download) MiB/s of the plain baselines for the test file at `path`."""
    root = work / "plain"
    stores = [PlainStore(root / f"supplier-{pos}") for pos in range(SUPPLIERS)]
    try:
        up = plain_upload(path, stores, block_size, window)
        down = plain_download(stores, path.stat().st_size, block_size, window, work / "plain-down.bin", sha)
        return up, down
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(root, ignore_errors=True)


def rate(fn: Callable[[], Any], nbytes: int, min_time: float = 0.5) -> float:
    """MiB/s of `fn` over `nbytes`, repeated for at least `min_time` seconds (after one warm-up)."""
    fn()
    runs, began = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        took = time.perf_counter() - began
        if took >= min_time and runs >= 3:
            return runs * nbytes / MIB / took


def baselines(block: bytes) -> dict[str, float]:
    key = AESGCM.generate_key(bit_length=256)
    aes = AESGCM(key)
    nonce = bytes(12)
    cipher = aes.encrypt(nonce, block, b"aad")
    half = (len(cipher) + 1) // 2
    padded = cipher + bytes(2 * half - len(cipher))
    primary = [padded[:half], padded[half:]]
    encoder, decoder = zfec.Encoder(2, SUPPLIERS), zfec.Decoder(2, SUPPLIERS)
    secondary = [bytes(s) for s in encoder.encode(primary, [2, 3])]
    assert b"".join(bytes(p) for p in decoder.decode(secondary, [2, 3])) == padded
    n = len(block)
    return {
        "AES-256-GCM encrypt": rate(lambda: aes.encrypt(nonce, block, b"aad"), n),
        "zfec encode 2-of-4": rate(lambda: encoder.encode(primary, [2, 3]), n),
        "blocks.seal (AES+zfec+sha256)": rate(lambda: blocks.seal(key, "bench", 0, block, SUPPLIERS), n),
        "zfec decode from 2 secondaries": rate(lambda: decoder.decode(secondary, [2, 3]), n),
        "sha256": rate(lambda: hashlib.sha256(block).digest(), n),
    }


# ---- processes ------------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pids(nodes: list[NodeClient]) -> dict[tuple[str, str], int]:
    """(node name, program) -> pid for every running program of every node (the `bus` included)."""
    found = {}
    for client in nodes:
        for proc in client.ok("process_info")["processes"]:
            if proc.get("pid"):
                found[(client.name, proc["name"])] = int(proc["pid"])
    return found


class CpuMeter:
    """utime + stime of a fixed set of processes between `start` and `stop`, in ms."""

    def __init__(self, nodes: list[NodeClient]):
        self.procs = pids(nodes)
        self.before: dict[tuple[str, str], int] = {}
        self.used: dict[tuple[str, str], float] = {}

    def start(self) -> None:
        self.before = {key: t for key, pid in self.procs.items() if (t := cpu_ticks(pid)) is not None}

    def stop(self) -> dict[tuple[str, str], float]:
        for key, pid in self.procs.items():
            after = cpu_ticks(pid)
            if after is not None and key in self.before:
                self.used[key] = (after - self.before[key]) * 1000 / CLK_TCK
        return self.used


class RssSampler(threading.Thread):
    """Peak VmRSS of one pid, sampled every `interval` seconds until `stop`."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kib = rss_kib(pid)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            self.halt.wait(self.interval)

    def stop(self) -> float:
        self.halt.set()
        self.join()
        self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
        return self.peak_kib / 1024


# ---- the network ----------------------------------------------------------------------------------


def connected(client: NodeClient) -> bool:
    items = client.ok("suppliers_list")
    return len(items) == SUPPLIERS and all(i["supplier_state"] == "CONNECTED" for i in items)


def hire(customer: NodeClient, nodes: list[NodeClient], total: int, timeout: float = 120) -> list[str]:
    """Give the customer room for `total` bytes of files and 4 CONNECTED suppliers; their idurls.

    Waits until every supplier has granted the new room: the customer asks for it at its next heartbeat,
    and a supplier that refuses is replaced, which would otherwise happen in the middle of the first upload.
    """
    needed = max(1024 * MIB, 4 * total + 1024 * MIB)  # 2-of-4 stores 2x; keep room for old versions
    customer.ok("config_set", key="services/customer/needed-space", value=needed)
    customer.ok("config_set", key="services/employer/replace-offline-after", value=3600)
    customer.ok("config_set", key="services/customer/suppliers-number", value=SUPPLIERS)
    for key, value in OPTIONS.items():
        customer.ok("config_set", key=key, value=value)
    me = customer.ok("identity_get")["idurl"]
    by_idurl = {n.ok("identity_get")["idurl"]: n for n in nodes}

    def granted() -> bool:
        if not connected(customer):
            return False
        for item in customer.ok("suppliers_list"):
            contracts = by_idurl[item["idurl"]].ok("customers_list", verbose=True)
            mine = [c for c in contracts if c["idurl"] == me]
            if not mine or int(mine[0].get("allocated", 0)) < needed // SUPPLIERS:
                return False
        return True

    deadline = time.monotonic() + timeout
    while not granted():
        if time.monotonic() > deadline:
            raise TimeoutError(f"4 suppliers with room not CONNECTED in {timeout:g}s: {customer.ok('suppliers_list')}")
        time.sleep(0.5)
    return [i["idurl"] for i in customer.ok("suppliers_list")]


def timed_call(customer: NodeClient, route: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    status, doc = customer.request("POST", route, body=body, timeout=LONG)
    took = time.perf_counter() - began
    if status != 200 or doc.get("status") != "OK":
        raise RuntimeError(f"{route} failed: HTTP {status} {doc}")
    return took, doc["result"]


def measure(nodes: list[NodeClient], customer: NodeClient, master: str, path: Path, size: int, sha: str,
            work: Path, block_size: int, window: int) -> dict[str, Any]:
    label = label_of(size)
    remote = f"{master}:bench/{label}.bin"
    mib = size / MIB
    out: dict[str, Any] = {"label": label, "mib": mib}

    meter = CpuMeter(nodes)
    storage_pid = meter.procs[(customer.name, "storage")]
    sampler = RssSampler(storage_pid)
    out["rss0_mb"] = sampler.peak_kib / 1024
    sampler.start()
    meter.start()
    try:
        took, result = timed_call(customer, "/file/upload/start/v1",
                                  {"local_path": str(path), "remote_path": remote, "wait_result": True})
    finally:
        cpu = meter.stop()
        out["rss_mb"] = sampler.stop()
    if result.get("state") != "ready":
        raise RuntimeError(f"upload of {remote} is not ready: {result}")
    out["up"], out["up_cpu"] = mib / took, cpu
    out["up_cpu_storage"] = cpu.get((customer.name, "storage"), 0.0)

    dest = work / f"down-{label}"
    dest.mkdir()
    meter = CpuMeter(nodes)
    meter.start()
    took, result = timed_call(customer, "/file/download/start/v1",
                              {"remote_path": remote, "destination_path": str(dest), "wait_result": True})
    cpu = meter.stop()
    got = Path(result["local_path"])
    got_sha = sha256_file(got)
    if got_sha != sha:
        raise SystemExit(f"DOWNLOAD CORRUPT: {remote} came back as {got} with sha256 {got_sha}, expected {sha}")
    shutil.rmtree(dest)
    out["down"], out["down_cpu"] = mib / took, cpu
    out["down_cpu_storage"] = cpu.get((customer.name, "storage"), 0.0)
    out["plain_up"], out["plain_down"] = plain_transfers(path, sha, work, block_size, window)
    out["copy"] = plain_copy(path, work / f"copy-{label}.bin")
    return out


def role_of(name: str, customer: str, suppliers: set[str]) -> str:
    return "customer" if name == customer else "supplier" if name in suppliers else "other"


def breakdown(cpu: dict[tuple[str, str], float], mib: float, customer: str, suppliers: set[str]
              ) -> list[tuple[str, float]]:
    """CPU ms/MiB by role (customer / supplier (summed over the 4) / other) and program, largest first."""
    grouped: dict[str, float] = {}
    for (name, program), ms in cpu.items():
        key = f"{role_of(name, customer, suppliers)}:{program}"
        grouped[key] = grouped.get(key, 0.0) + ms / mib
    return sorted(grouped.items(), key=lambda kv: -kv[1])


def report(rows: list[dict[str, Any]], base: dict[str, float], customer: str, suppliers: set[str],
           nodes: int, load: str, block_size: int, window: int) -> None:
    print(f"{nodes} nodes, customer {customer} with {SUPPLIERS} suppliers (2-of-4), block {label_of(block_size)}, "
          f"upload window {window}, {os.cpu_count()} CPUs, 1-min load average before start {load} "
          f"(other work on the host skews MiB/s)")
    head = (f"{'size':>5} {'upload':>8} {'plain':>7} {'ratio':>6} {'download':>9} {'plain':>7} {'ratio':>6} "
            f"{'copy':>7} {'RSS MB':>11} {'up CPU ms/MiB':>16} {'down CPU ms/MiB':>16} {'cores up/down':>14}")
    print(head)
    print(f"{'':>5} {'MiB/s':>8} {'up':>7} {'':>6} {'MiB/s':>9} {'down':>7} {'':>6} {'(ref)':>7} {'idle/peak':>11} "
          f"{'all / cust.stor':>16} {'all / cust.stor':>16} {'':>14}")
    for r in rows:
        up_all = sum(r["up_cpu"].values()) / r["mib"]
        down_all = sum(r["down_cpu"].values()) / r["mib"]
        print(f"{r['label']:>5} {r['up']:>8.1f} {r['plain_up']:>7.0f} {r['up'] / r['plain_up']:>6.2f} "
              f"{r['down']:>9.1f} {r['plain_down']:>7.0f} {r['down'] / r['plain_down']:>6.2f} "
              f"{r['copy']:>7.0f} {r['rss0_mb']:>5.0f} /{r['rss_mb']:>4.0f} "
              f"{up_all:>7.1f} / {r['up_cpu_storage'] / r['mib']:>6.1f} "
              f"{down_all:>7.1f} / {r['down_cpu_storage'] / r['mib']:>6.1f} "
              f"{up_all * r['up'] / 1000:>6.2f} /{down_all * r['down'] / 1000:>5.2f}")
    print("baselines (in this process, 4 MiB block of the same data):")
    for name, value in base.items():
        print(f"  {name:<32} {value:>8.0f} MiB/s")
    print(AIMS)
    big = rows[-1]
    for kind in ("up", "down"):
        parts = breakdown(big[f"{kind}_cpu"], big["mib"], customer, suppliers)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in parts if v >= 0.5)
        print(f"CPU ms/MiB by process, {big['label']} {kind}load: {shown}")


def work_root() -> Path:
    """A fresh temporary folder on the same disk as the project."""
    project = Path(__file__).resolve().parent.parent
    root = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    if root.stat().st_dev != project.stat().st_dev:
        root.rmdir()
        root = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=project.parent))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100M,1G", help="file sizes, comma separated, M/G suffixes")
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--port-offset", type=int, default=OFFSET,
                        help="added to every port of the local network (pick one no other run uses)")
    parser.add_argument("--keep", action="store_true", help="leave the network running (and its folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an option to set on the customer before the run (repeatable)")
    args = parser.parse_args()
    sizes = sorted(parse_size(s) for s in args.sizes.split(",") if s.strip())
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set wants KEY=VALUE, not {item!r}")
        OPTIONS[key.strip()] = value.strip()
    if args.nodes < SUPPLIERS + 2:
        parser.error(f"--nodes must be at least {SUPPLIERS + 2} (node 0 runs the id server, node 1 is the customer)")
    load = Path("/proc/loadavg").read_text().split()[0]
    root = work_root()
    files = root / "files"
    files.mkdir()
    rows: list[dict[str, Any]] = []
    try:
        doc = localnet.up(root / "net", args.nodes, args.port_offset, identities=True)
        nodes = [NodeClient.from_listing(item) for item in doc["nodes"]]
        customer = nodes[CUSTOMER]
        suppliers = hire(customer, nodes, sum(sizes))
        by_idurl = {n.ok("identity_get")["idurl"]: n.name for n in nodes}
        supplier_names = {by_idurl[i] for i in suppliers}
        master = f"master${customer.ok('identity_get')['global_id']}"
        block_size = min(int(customer.ok("config_get", key=key)["value"]) for key in
                         ("services/backups/block-size", "services/backups/max-block-size"))
        block_size = min(block_size, MAX_BLOCK_SIZE)
        window = int(customer.ok("config_get", key="services/backups/upload-window")["value"])
        first = b""
        for size in sizes:
            path = files / f"{label_of(size)}.bin"
            sha, block = make_file(path, size)
            first = first or block
            rows.append(measure(nodes, customer, master, path, size, sha, files, block_size, window))
            path.unlink()
        base = baselines(first if len(first) == CHUNK else first + os.urandom(CHUNK - len(first)))
    finally:
        shutil.rmtree(files, ignore_errors=True)
        if not args.keep:
            localnet.down(root / "net")
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"network left running under {root / 'net'} (stop: bitdust localnet down --dir {root / 'net'})")
    report(rows, base, customer.name, supplier_names, args.nodes, load, block_size, window)


if __name__ == "__main__":
    main()
