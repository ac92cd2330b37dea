"""The address peers see us at is decided by agreement: hostile STUN answers over real UDP sockets.

Every peer listens on a loopback address of its own (127.0.0.2, .3, ...: distinct hosts to the node
under test, which listens on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any, AsyncIterator

import pytest
from kademlia.node import Node

from services.dht import stun
from services.dht.node import DhtNode
from services.dht.protocol import DhtProtocol
from services.dht.storage import DhtStore

LIE = ("203.0.113.9", 4000)


class LyingProtocol(DhtProtocol):
    """A DHT peer that reports an address of its choosing instead of where our packets come from."""

    def rpc_stun(self, sender: Any) -> list[Any]:
        return list(LIE)


class Peers:
    """The node under test and the peers it may ask, all on real sockets."""

    def __init__(self) -> None:
        self.closers: list[Any] = []

    async def node(self, host: str) -> DhtNode:
        node = DhtNode(DhtStore(":memory:"), rpc_timeout=1.0)
        await node.listen(0, interface=host)
        self.closers.append(node.stop)
        return node

    async def liar(self, host: str) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: LyingProtocol(Node(hashlib.sha1(os.urandom(8)).digest()), DhtStore(":memory:"), 20),
            local_addr=(host, 0))
        self.closers.append(transport.close)
        sockname = transport.get_extra_info("sockname")
        return sockname[0], int(sockname[1])


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    made = Peers()
    yield made
    for close in made.closers:
        close()


def _contact(me: DhtNode, address: tuple[str, int]) -> None:
    me.proto.router.add_contact(Node(hashlib.sha1(repr(address).encode()).digest(), *address))


async def test_one_lying_seed_among_honest_peers_cannot_move_the_address(peers):
    me = await peers.node("127.0.0.1")
    honest = [(await peers.node(host)).address for host in ("127.0.0.2", "127.0.0.3")]
    liar = await peers.liar("127.0.0.4")
    # The liar is asked first (a seed): the old code took the first answer.
    assert await me.stun([liar, *honest]) == me.address


async def test_a_lone_lying_contact_is_not_acted_on(peers):
    me = await peers.node("127.0.0.1")
    _contact(me, await peers.liar("127.0.0.4"))
    assert await me.stun() is None


async def test_one_host_is_one_vote_however_many_nodes_it_runs(peers):
    me = await peers.node("127.0.0.1")
    for _ in range(3):
        _contact(me, await peers.liar("127.0.0.4"))
    honest = [(await peers.node(host)).address for host in ("127.0.0.2", "127.0.0.3")]
    assert me.address is not None
    found = await me.stun(honest)
    assert found == me.address


async def test_a_lone_honest_seed_is_trusted_when_no_second_opinion_exists(peers):
    me = await peers.node("127.0.0.1")
    seed = await peers.node("127.0.0.2")
    assert await me.stun([seed.address]) == me.address
    # The same answer from a contact that is not a seed is not acted on.
    assert seed.address is not None
    _contact(me, seed.address)
    assert await me.stun() is None


def test_agreement_rules():
    a, b, c = ("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1)
    truth, lie = ("192.0.2.1", 5000), ("198.51.100.7", 6000)
    assert stun.agreed_address([(a, truth), (b, truth), (c, lie)], []) == truth
    assert stun.agreed_address([(a, truth), (b, lie)], []) is None  # a tie
    assert stun.agreed_address([(a, truth)], []) is None
    assert stun.agreed_address([(a, truth)], ["10.0.0.2"]) == truth
    # A host whose nodes disagree casts no vote; another port of the same host is no second opinion.
    assert stun.agreed_address([(a, truth), (("10.0.0.2", 2), lie), (b, truth)], []) is None
    assert stun.agreed_address([(a, truth), (("10.0.0.2", 2), truth)], []) is None
    # The port most agreeing peers saw.
    assert stun.agreed_address([(a, ("192.0.2.1", 7)), (b, truth), (c, truth)], []) == truth
    assert stun.agreed_address([], ["10.0.0.2"]) is None


def test_peers_are_picked_at_distinct_hosts_first():
    seeds = [("10.0.0.1", 1)]
    contacts = [("10.0.0.1", 2), ("10.0.0.1", 3), ("10.0.0.2", 1), ("10.0.0.3", 1)]
    picked = stun.pick_peers(seeds, contacts, own=("10.0.0.9", 1), count=3)
    assert picked[0] == seeds[0] and {p[0] for p in picked} == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    everyone = stun.pick_peers(seeds, contacts, own=("10.0.0.1", 3), count=5)
    assert len(everyone) == 4 and ("10.0.0.1", 3) not in everyone
