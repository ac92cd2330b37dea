"""One Kademlia node on UDP: listen, join, look up nodes and values, store, republish.

Built on `kademlia` (routing table, iterative lookups) with our `DhtProtocol`. It plays the part
of `kademlia.network.Server`, which we do not use because it keeps values in memory, stores
unchecked values and has no notion of republishing its own writes after a restart.

No bus here: the process's service and the simulation drive it the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from kademlia.node import Node

from services.dht import records, stun
from services.dht.protocol import CountingNodeCrawl, DhtProtocol, ValuesCrawl
from services.dht.storage import DhtStore

log = logging.getLogger(__name__)

KSIZE = 20
ALPHA = 3


@dataclass
class LookupResult:
    """Values found for a key (newest first), the closest nodes seen and the rounds it took."""

    values: list[dict[str, Any]]
    closest: list[Node]
    rounds: int


Renewer = Callable[[dict[str, Any], float], Awaitable[dict[str, Any] | None]]
"""Publishes one of our envelopes again for a lifetime: a fresh copy, signed again (None: not now)."""


def node_info(node: Node) -> dict[str, str]:
    """A node as the reference engine shows it in `closest_nodes`."""
    return {"address": f"{node.ip}:{node.port}", "dht_id": node.id.hex()}


class DhtNode:
    """A DHT node bound to one UDP port."""

    def __init__(self, store: DhtStore, node_id: bytes | None = None, ksize: int = KSIZE, alpha: int = ALPHA,
                 rpc_timeout: float = 5.0):
        self.store = store
        self.ksize = ksize
        self.alpha = alpha
        self.rpc_timeout = rpc_timeout
        self.node = Node(node_id or self._stored_or_new_id())
        self.protocol: DhtProtocol | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] | None = None
        self.on_new_contact: Callable[[Node], None] | None = None
        self.verifier: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        """Checks the owners' signatures of a record a peer asks us to store (see `DhtProtocol.rpc_store`)."""
        self._asking: set[asyncio.Future[Any]] = set()
        """Asks of `ask_known` still under way (kept referenced until they end)."""

    def _stored_or_new_id(self) -> bytes:
        # A restarted node keeps its id: the values it held are still "its" values.
        stored = self.store.meta_get("node_id")
        if isinstance(stored, str) and len(stored) == 40:
            return bytes.fromhex(stored)
        fresh = hashlib.sha1(os.urandom(32)).digest()
        self.store.meta_set("node_id", fresh.hex())
        return fresh

    @property
    def dht_id(self) -> str:
        return self.node.id.hex()

    async def listen(self, port: int, interface: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            lambda: DhtProtocol(self.node, self.store, self.ksize, self.rpc_timeout),
            local_addr=(interface, port),
        )
        self.protocol.on_new_contact = self._new_contact
        self.protocol.verifier = self.verifier
        sockname = self.transport.get_extra_info("sockname")
        self.address = (sockname[0], int(sockname[1]))
        self.node.ip, self.node.port = self.address
        self.protocol.standing.note_answer(self.dht_id, self.address)  # our own entries rank as answering
        log.info("dht node %s listening on %s:%d", self.dht_id, *self.address)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _new_contact(self, node: Node) -> None:
        if self.on_new_contact is not None:
            self.on_new_contact(node)

    @property
    def proto(self) -> DhtProtocol:
        if self.protocol is None:
            raise RuntimeError("the DHT node is not listening")
        return self.protocol

    # --- membership ------------------------------------------------------------------------

    def contacts(self) -> list[Node]:
        return [n for bucket in self.proto.router.buckets for n in bucket.get_nodes()]

    def bucket_count(self) -> int:
        return len(self.proto.router.buckets)

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> list[Node]:
        """Ping `addrs`, then look ourselves up to fill the routing table; returns the nodes found."""
        own = self.address
        targets = [a for a in dict.fromkeys(addrs) if a != own]
        answers = await asyncio.gather(*(self.proto.ping(a, self.node.id) for a in targets))
        nodes = []
        for addr, (ok, nodeid) in zip(targets, answers, strict=True):
            if ok and isinstance(nodeid, bytes) and len(nodeid) == 20 and nodeid != self.node.id:
                self.proto.note_ping_answer(nodeid, addr, (ok, nodeid))
                node = Node(nodeid, addr[0], addr[1])
                self.proto.welcome_if_new(node)
                nodes.append(node)
        if not nodes:
            return []
        crawl = CountingNodeCrawl(self.proto, self.node, nodes, self.ksize, self.alpha)
        return list(await crawl.find())

    async def find_nodes(self, target: bytes) -> tuple[list[Node], int]:
        """The k nodes closest to `target` that answered, and the rounds the lookup took."""
        nearest = self.proto.router.find_neighbors(Node(target), self.alpha)
        if not nearest:
            return [], 0
        crawl = CountingNodeCrawl(self.proto, Node(target), nearest, self.ksize, self.alpha)
        found = list(await crawl.find())
        return found, crawl.rounds

    def closest_known(self, target: bytes, count: int | None = None) -> list[Node]:
        return self.proto.router.find_neighbors(Node(target), count or self.ksize)

    # --- values ----------------------------------------------------------------------------

    def get_local(self, dkey: bytes) -> dict[str, Any] | None:
        return self.store.envelope(dkey)

    async def get_remote(self, dkey: bytes) -> LookupResult:
        """Look `dkey` up in the network; every distinct live value found, newest first."""
        target = Node(dkey)
        nearest = self.proto.router.find_neighbors(target)
        if not nearest:
            return LookupResult([], [], 0)
        crawl = ValuesCrawl(self.proto, target, nearest, self.ksize, self.alpha)
        raw = await crawl.find()
        values = []
        for text in raw or []:
            try:
                env = records.decode_envelope(text)
            except records.RecordError:
                continue
            if records.storage_key(env["layer_id"], env["record_type"], env["key"]) == dkey:
                values.append(env)
        values.sort(key=lambda e: float(e["published"]), reverse=True)
        return LookupResult(values, self.closest_known(dkey), crawl.rounds)

    def ask_known(self, dkey: bytes) -> list[asyncio.Task[dict[str, Any] | None]]:
        """Ask the closest nodes of our own routing table for their copy of `dkey`, all at once.

        One FIND_VALUE each, no iterative lookup; each future gives that node's envelope, or None
        when it holds none, answers something unreadable or never answers. The caller may stop
        waiting at any time: the asks end on their own within the RPC timeout (a dead contact costs
        the caller nothing it does not choose to wait for).
        """
        asks = [asyncio.ensure_future(self._copy_at(n, dkey)) for n in self.closest_known(dkey)]
        for ask in asks:
            self._asking.add(ask)
            ask.add_done_callback(self._asking.discard)
        return asks

    async def _copy_at(self, node: Node, dkey: bytes) -> dict[str, Any] | None:
        """`node`'s copy of `dkey`, decoded; None when it holds none, answers something unreadable or not at all.

        Where the envelope says it lives is for the reader to check (`Directory.verify`).
        """
        ok, answer = await self.proto.call_find_value(node, Node(dkey))
        if not ok or not isinstance(answer, dict):
            return None
        try:
            return records.decode_envelope(answer.get("value"))
        except records.RecordError:
            return None

    async def collect(self, dkey: bytes) -> list[dict[str, Any]]:
        """Every copy of `dkey` held here and by the k closest nodes (for merged lists such as layer members)."""
        nodes, _ = await self.find_nodes(dkey)
        answers = await asyncio.gather(*(self._copy_at(n, dkey) for n in nodes))
        return [env for env in (self.get_local(dkey), *answers) if env is not None]

    async def store_value(self, dkey: bytes, text: str) -> tuple[list[Node], bool]:
        """Store an envelope at the k closest nodes (and here when we are among them).

        Returns the nodes that accepted it and whether this node keeps a copy.
        """
        nodes, _ = await self.find_nodes(dkey)
        target = Node(dkey)
        kept_here = False
        if not nodes or len(nodes) < self.ksize or \
                self.node.distance_to(target) < max(n.distance_to(target) for n in nodes):
            kept_here = self.proto.accept_value(dkey, text)
        results = await asyncio.gather(*(self.proto.call_store(n, dkey, text) for n in nodes))
        accepted = [n for n, (ok, answer) in zip(nodes, results, strict=True) if ok and answer is True]
        return accepted, kept_here

    async def publish(self, env: dict[str, Any], renew_seconds: float | None = None) -> tuple[list[Node], bool]:
        """Write our own value and remember it, so it is republished after restarts and rejoins."""
        dkey = records.storage_key(env["layer_id"], env["record_type"], env["key"])
        text = records.encode_envelope(env)
        if env["record_type"] != records.LAYER_MEMBERS:
            self.store.remember_published(dkey, text, float(env["expire_at"]), renew_seconds)
        return await self.store_value(dkey, text)

    async def republish(self, renew: Renewer | None = None) -> int:
        """Store every live value of our own again; renew those we keep alive. Returns the count.

        A renewed record gets a fresh `published` and `expire_at` from `renew`, which signs it again
        (both times are signed); without `renew`, or when it cannot sign now, the stored copy goes
        out as it is until it expires.
        """
        now = time.time()
        count = 0
        for dkey, text, expire_at, renew_seconds in self.store.published():
            fresh = None
            if renew_seconds and renew is not None:
                fresh = await renew(records.decode_envelope(text, now=0), renew_seconds)
            if fresh is not None:
                text = records.encode_envelope(fresh)
                self.store.remember_published(dkey, text, float(fresh["expire_at"]), renew_seconds)
            elif expire_at <= now:
                if not renew_seconds:
                    self.store.forget_published(dkey)
                continue  # a record we keep alive waits for the next round that can sign it
            await self.store_value(dkey, text)
            count += 1
        return count

    async def stun_from_port(self, port: int, peers: list[tuple[str, int]]) -> tuple[str, int] | None:
        """`stun` from a fresh socket on local UDP `port`: what peers agree they see of that port.

        Raises `OSError` when the port cannot be bound (in use, not allowed).
        """
        loop = asyncio.get_running_loop()
        transport, probe = await loop.create_datagram_endpoint(
            lambda: DhtProtocol(Node(hashlib.sha1(os.urandom(20)).digest()), self.store, self.ksize,
                                self.rpc_timeout),
            local_addr=("0.0.0.0", port))
        try:
            asked = stun.pick_peers(peers, [(n.ip, n.port) for n in self.contacts()], None)
            return await self._agreed(probe, asked, peers)
        finally:
            transport.close()

    async def stun(self, peers: list[tuple[str, int]] | None = None, only: bool = False) -> tuple[str, int] | None:
        """The address peers agree they see our packets come from; None when they do not (see `stun`).

        `peers` (the seeds) are asked first, then random known contacts (none with `only`), up to
        `stun.ASKED_PEERS` at once, at as many distinct IP addresses as there are.
        """
        contacts = [] if only else [(n.ip, n.port) for n in self.contacts()]
        asked = stun.pick_peers(peers or [], contacts, self.address)
        return await self._agreed(self.proto, asked, peers or [])

    async def _agreed(self, probe: DhtProtocol, asked: list[tuple[str, int]],
                      seeds: list[tuple[str, int]]) -> tuple[str, int] | None:
        found = await asyncio.gather(*(probe.call_stun(addr) for addr in asked))
        answers = [(peer, seen) for peer, seen in zip(asked, found, strict=True) if seen is not None]
        agreed = stun.agreed_address(answers, {host for host, _ in seeds})
        if agreed is None and answers:
            log.info("STUN: %d peers answered without agreement: %s", len(answers), answers)
        return agreed
