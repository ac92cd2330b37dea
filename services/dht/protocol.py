"""The Kademlia wire protocol of a node: `kademlia`'s RPCs over our sqlite store, plus STUN.

Differences from `kademlia.protocol.KademliaProtocol`, and why:
- values are checked envelopes (see `records`), kept in `DhtStore`; a STORE that would let a
  stranger overwrite a signed record is refused, and layer member buckets are merged, not replaced,
  from the entries whose member signed them (see `members`);
- `welcome_if_new` hands keys to a newcomer by their real DHT key (the library digests the key a
  second time, so it would never hand over anything);
- `rpc_stun` answers with the address the request came from, which is how a node learns the
  address its peers see (`dht.stun`);
- malformed datagrams and requests are dropped without unhandled task errors, and traffic is
  counted for `network_status`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from typing import Any, Awaitable, Callable

from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse, ValueSpiderCrawl
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from services.dht import members, records
from services.dht.storage import DhtStore

log = logging.getLogger(__name__)

ID_SIZE = 20
MAX_VERIFYING = 8
"""Signature checks of peers' STOREs running at once; more are refused until one finishes."""
CHECK_RATE = 50.0
CHECK_BURST = 200
"""Peers' STOREs checked per second on average, and at most at once after a quiet spell; more are
refused ("busy"). A check costs up to 4 signatures (a member bucket), 0.2 to 0.7 ms each in pure
Python: the budget keeps a flood of signed STOREs under about a seventh of a CPU."""
SOURCE_CHECK_RATE = 20.0
SOURCE_CHECK_BURST = 100
"""The same for one source address, so that one flooding peer cannot spend the whole budget."""
MAX_SOURCES = 4096
"""Source addresses whose budgets are remembered (the least recently seen is forgotten first)."""


class CheckBudget:
    """A token bucket: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class CheckBudgets:
    """The budget of all peers' STOREs and one per source address (`MAX_SOURCES` at most)."""

    def __init__(self, total: CheckBudget, rate: float = SOURCE_CHECK_RATE, burst: int = SOURCE_CHECK_BURST,
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sources: OrderedDict[str, CheckBudget] = OrderedDict()

    @property
    def sources(self) -> int:
        """How many source addresses have a budget remembered."""
        return len(self._sources)

    def take(self, source: str) -> bool:
        """Spend one check of `source`'s budget and one of the total, if both have one."""
        budget = self._sources.pop(source, None) or CheckBudget(self.rate, self.burst, self._clock)
        self._sources[source] = budget
        while len(self._sources) > MAX_SOURCES:
            self._sources.popitem(last=False)
        return budget.take() and self.total.take()


class CountingTransport:
    """Wraps the datagram transport to count what is sent."""

    def __init__(self, transport: asyncio.DatagramTransport, stats: "TrafficStats"):
        self._transport = transport
        self._stats = stats

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._stats.packets_sent += 1
        self._stats.bytes_sent += len(data)
        self._transport.sendto(data, addr)

    def close(self) -> None:
        self._transport.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class TrafficStats:
    """Packets, bytes and RPCs in and out, as `network_status` reports them."""

    def __init__(self) -> None:
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.rpc_calls: Counter[str] = Counter()
        """RPCs this node sent, by name."""
        self.rpc_responses: Counter[str] = Counter()
        """RPCs this node answered, by name."""
        self.refused: Counter[str] = Counter()
        """Peers' STOREs refused, by reason (bad signature, from the future, too busy to check)."""


_CAMEL = {"find_node": "findNode", "find_value": "findValue", "store": "store", "ping": "ping", "stun": "stun"}


class DhtProtocol(KademliaProtocol):
    """Kademlia RPCs backed by a `DhtStore`."""

    def __init__(self, source_node: Node, store: DhtStore, ksize: int, wait_timeout: float = 5.0):
        super().__init__(source_node, store, ksize)
        self._wait_timeout = wait_timeout
        # Not `self.store`: rpcudp turns unknown attributes into remote calls, and `store` is an RPC.
        self.values: DhtStore = store
        self.stats = TrafficStats()
        self.on_new_contact: Any = None
        """Called with each node added to the routing table (the node uses it to notice a join)."""
        self.verifier: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        """The part of a peer's envelope signed by its owners (a member bucket's signed entries);
        raises `records.RecordError` when there is none."""
        self._verifying = 0
        self.check_budget = CheckBudgets(CheckBudget(CHECK_RATE, CHECK_BURST))
        self.standing = members.MemberStanding()
        """Members this node saw announced, and DHT nodes that answered its pings (ranks member buckets)."""

    # --- transport -------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = CountingTransport(transport, self.stats)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stats.packets_received += 1
        self.stats.bytes_received += len(data)
        asyncio.ensure_future(self._solve_safely(data, addr))

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable" from a node that went away: its request simply times out.
        log.debug("datagram error: %s", exc)

    async def _solve_safely(self, data: bytes, addr: Any) -> None:
        try:
            await self._solve_datagram(data, addr)
        except Exception as exc:  # noqa: BLE001 - a peer's garbage must not surface as task errors
            log.debug("dropped malformed datagram from %s: %s", addr, exc)

    async def _accept_request(self, msg_id: bytes, data: Any, address: Any) -> None:
        try:
            if isinstance(data, list) and len(data) == 2 and isinstance(data[0], str):
                self.stats.rpc_responses[_CAMEL.get(data[0], data[0])] += 1
            await super()._accept_request(msg_id, data, address)
        except Exception as exc:  # noqa: BLE001 - see _solve_safely
            log.debug("dropped malformed request from %s: %s", address, exc)

    def _timeout(self, msg_id: bytes) -> None:
        # The library logs every timeout as an error; a peer that went away is routine.
        if msg_id in self._outstanding:
            self._outstanding[msg_id][0].set_result((False, None))
            del self._outstanding[msg_id]

    def _count(self, name: str) -> None:
        self.stats.rpc_calls[_CAMEL.get(name, name)] += 1

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> Any:
        self._count("find_node")
        return await super().call_find_node(node_to_ask, node_to_find)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> Any:
        self._count("find_value")
        return await super().call_find_value(node_to_ask, node_to_find)

    async def call_ping(self, node_to_ask: Node) -> Any:
        """Ping a node; one that answers with the id we asked for is noted as answering at that address."""
        self._count("ping")
        result = await super().call_ping(node_to_ask)
        self.note_ping_answer(node_to_ask.id, (node_to_ask.ip, node_to_ask.port), result)
        return result

    def note_ping_answer(self, nodeid: bytes, address: tuple[str, int], result: Any) -> None:
        """Remember that the node `nodeid` answered a ping at `address` (a request/reply: the address is real)."""
        ok, answer = result if isinstance(result, tuple) and len(result) == 2 else (False, None)
        if ok and answer == nodeid:
            self.standing.note_answer(nodeid.hex(), address)

    async def call_store(self, node_to_ask: Node, key: bytes, value: Any) -> Any:
        self._count("store")
        return await super().call_store(node_to_ask, key, value)

    async def call_stun(self, address: tuple[str, int]) -> tuple[str, int] | None:
        """Ask the node at `address` where our packets come from."""
        self._count("stun")
        ok, answer = await self.stun(address)
        if ok and isinstance(answer, (list, tuple)) and len(answer) == 2:
            return str(answer[0]), int(answer[1])
        return None

    # --- RPCs served ------------------------------------------------------------------------

    def _sender(self, sender: Any, nodeid: Any) -> Node | None:
        if not isinstance(nodeid, bytes) or len(nodeid) != ID_SIZE:
            return None
        return Node(nodeid, sender[0], sender[1])

    def rpc_stun(self, sender: Any) -> list[Any]:
        return [sender[0], sender[1]]

    def rpc_ping(self, sender: Any, nodeid: Any) -> Any:
        source = self._sender(sender, nodeid)
        if source is not None:
            self.welcome_if_new(source)
        return self.source_node.id

    async def rpc_store(self, sender: Any, nodeid: Any, key: Any, value: Any) -> bool:
        """A peer asks us to keep a value: check it cheaply, verify its owner's signature, keep it.

        The signature is checked before anything is stored, so a forged record (an owner's name, a
        bad signature, a far-future `published`) never displaces or blocks the genuine one; it
        covers `published` and `expire_at`, so a replayed genuine record cannot be restamped to
        displace a newer one either (`records.may_replace`). Of a
        member bucket only the entries their members signed are merged (at most
        `members.MAX_STORE_CHECKS` new ones checked); a bucket with none is refused. At most
        `MAX_VERIFYING` STOREs are checked at once, and `CHECK_RATE` a second (`CHECK_BURST` after
        a quiet spell), `SOURCE_CHECK_RATE` of them from one address; a flood beyond that is
        refused, not queued.
        """
        source = self._sender(sender, nodeid)
        if source is None or not isinstance(key, bytes) or len(key) != ID_SIZE:
            return False
        self.welcome_if_new(source)
        env = self._admissible(key, value)
        if env is None:
            return False
        if self.verifier is not None and records.needs_signature(env["record_type"]):
            if self._verifying >= MAX_VERIFYING or not self.check_budget.take(source.ip):
                self.stats.refused["busy"] += 1
                return False
            self._verifying += 1
            try:
                env = await self.verifier(env)
            except records.RecordError as err:
                self.stats.refused[err.reason] += 1
                log.info("refused a %s record for %r: %s", env["record_type"], env["key"], err)
                return False
            finally:
                self._verifying -= 1
        kept = self._keep(key, env)
        if kept and env["record_type"] == records.LAYER_MEMBERS:
            self._ping_back(source, env)
        return kept

    def _ping_back(self, source: Node, env: dict[str, Any]) -> None:
        """A member announced itself from its own DHT node: ping it back, so its entry ranks as answering.

        One ping per announcement from a node not yet known to answer, to the address the STORE came
        from; the STORE itself passed the check budget, so this sends no more than it receives.
        """
        sender = source.id.hex()
        if self.standing.answered_at(sender) is None and any(e["dht_id"] == sender for e in members.entries(env)):
            asyncio.ensure_future(self.call_ping(source))

    def accept_value(self, dkey: bytes, value: Any) -> bool:
        """Keep `value` under `dkey` if it is a sane envelope that may replace what is there.

        For values this node writes itself; a peer's STORE goes through `rpc_store`.
        """
        env = self._admissible(dkey, value)
        return env is not None and self._keep(dkey, env)

    def _admissible(self, dkey: bytes, value: Any) -> dict[str, Any] | None:
        """The decoded envelope if it belongs at `dkey`, is not from the future and may replace the old one."""
        now = time.time()
        try:
            env = records.decode_envelope(value)
        except records.RecordError as err:
            log.debug("refused value for %s: %s", dkey.hex(), err)
            return None
        if records.storage_key(env["layer_id"], env["record_type"], env["key"]) != dkey:
            return None
        if float(env["published"]) > now + records.MAX_CLOCK_SKEW:
            self.stats.refused["published_in_future"] += 1
            return None
        if records.needs_signature(env["record_type"]) and env["record_type"] != records.LAYER_MEMBERS:
            try:
                records.check_lifetime(env)  # signed: refused rather than shortened
            except records.RecordError as err:
                self.stats.refused[err.reason] += 1
                return None
        else:
            env["expire_at"] = min(float(env["expire_at"]), now + records.MAX_EXPIRE)
        old = self.values.envelope(dkey)
        if env["record_type"] != records.LAYER_MEMBERS and old is not None and not records.may_replace(old, env):
            return None
        return env

    def _keep(self, dkey: bytes, env: dict[str, Any]) -> bool:
        old = self.values.envelope(dkey)
        if env["record_type"] == records.LAYER_MEMBERS:
            now = time.time()
            try:
                self.standing.note_seen(members.entries(env, now), now)
                merged = members.merge(old, env, now, self.standing)
            except records.RecordError:
                return False  # not a member bucket
            if merged is None:
                return False
            env = merged
        elif old is not None and not records.may_replace(old, env):
            return False  # a newer record arrived while this one was verified
        self.values.put(dkey, env, records.canonical(env))
        return True

    def rpc_find_node(self, sender: Any, nodeid: Any, key: Any) -> list[Any]:
        source = self._sender(sender, nodeid)
        if source is None or not isinstance(key, bytes) or len(key) != ID_SIZE:
            return []
        self.welcome_if_new(source)
        neighbors = self.router.find_neighbors(Node(key), exclude=source)
        return list(map(tuple, neighbors))

    def rpc_find_value(self, sender: Any, nodeid: Any, key: Any) -> Any:
        source = self._sender(sender, nodeid)
        if source is None or not isinstance(key, bytes) or len(key) != ID_SIZE:
            return []
        self.welcome_if_new(source)
        value = self.values.get(key)
        if value is None:
            return self.rpc_find_node(sender, nodeid, key)
        return {"value": value}

    def welcome_if_new(self, node: Node) -> None:
        """Add a newly seen node; hand it the values it is now among the closest to (paper §2.5)."""
        if not self.router.is_new_node(node):
            return
        for dkey, value in self.values.items():
            keynode = Node(dkey)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                new_node_close = node.distance_to(keynode) < neighbors[-1].distance_to(keynode)
                this_closest = self.source_node.distance_to(keynode) < neighbors[0].distance_to(keynode)
            if not neighbors or (new_node_close and this_closest):
                asyncio.ensure_future(self.call_store(node, dkey, value))
        self.router.add_contact(node)
        if self.on_new_contact is not None:
            self.on_new_contact(node)


class CountingNodeCrawl(NodeSpiderCrawl):
    """A node lookup that counts its rounds (the hops of the iterative lookup)."""

    rounds = 0

    async def _find(self, rpcmethod: Any) -> Any:
        self.rounds += 1
        return await super()._find(rpcmethod)


class ValuesCrawl(ValueSpiderCrawl):
    """A value lookup that returns every distinct value the first answering round found.

    The library keeps only the most common value; a reader that verifies signatures wants all
    candidates, so a forged copy cannot hide a genuine one. Also counts rounds.
    """

    rounds = 0

    async def _find(self, rpcmethod: Any) -> Any:
        self.rounds += 1
        return await super()._find(rpcmethod)

    async def _nodes_found(self, responses: dict[bytes, Any]) -> Any:
        toremove = []
        found: list[Any] = []
        for peerid, response in responses.items():
            answer = RPCFindResponse(response)
            if not answer.happened():
                toremove.append(peerid)
            elif answer.has_value():
                value = answer.response[1].get("value")
                if value not in found:
                    found.append(value)
            else:
                peer = self.nearest.get_node(peerid)
                if peer is not None:
                    self.nearest_without_value.push(peer)
                try:
                    self.nearest.push(answer.get_node_list())
                except (TypeError, ValueError, AttributeError):
                    toremove.append(peerid)
        self.nearest.remove(toremove)
        if found:
            return found
        if self.nearest.have_contacted_all():
            return None
        return await self.find()
