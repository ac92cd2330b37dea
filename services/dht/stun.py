"""Which address peers see us at, decided by agreement: one peer's word cannot move it.

The node's advertised address (identity contacts) and whether it needs a relay both follow from
the address DHT peers report (`DhtProtocol.rpc_stun`). One hostile contact answering alone could
send our identity to an address it controls or make us give up direct connections, so the node
asks several peers (`pick_peers`) and acts on what they agree on (`agreed_address`):

- every peer *IP address* has one vote, whatever the number of ports (nodes) it runs there, so
  one host with many DHT nodes is one opinion; a host whose nodes disagree casts none;
- an address wins with at least `MIN_AGREEING` votes and more than half of all votes;
- when one peer host answered in all, its answer counts only if it is a configured seed: the
  operator chose it, and there is no second opinion to be had (a one-host local network, or a node
  whose only contact is its seed). Any other lone answer is not acted on, and the callers fall
  back as they do when nobody answers (the identity advertises the local address that routes
  to a seed; the relay client keeps its previous verdict).

Pure logic; the node does the asking.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Iterable

Address = tuple[str, int]

ASKED_PEERS = 5
"""Peers asked at once: enough for a majority with two liars among them."""
MIN_AGREEING = 2


def pick_peers(seeds: list[Address], contacts: list[Address], own: Address | None,
               count: int = ASKED_PEERS) -> list[Address]:
    """Up to `count` peers to ask: seeds first, then random contacts, as many distinct IPs as there are.

    A second port of an IP already picked is taken only when no new IP is left, so the votes are
    spread over as many hosts as the node knows.
    """
    shuffled = list(contacts)
    random.shuffle(shuffled)
    candidates = [a for a in dict.fromkeys(list(seeds) + shuffled) if a != own]
    picked: list[Address] = []
    hosts: set[str] = set()
    for address in candidates:
        if len(picked) < count and address[0] not in hosts:
            picked.append(address)
            hosts.add(address[0])
    for address in candidates:
        if len(picked) < count and address not in picked:
            picked.append(address)
    return picked


def agreed_address(answers: Iterable[tuple[Address, Address]], seed_hosts: Iterable[str]) -> Address | None:
    """The address peers agree we are seen at, from (peer asked, address it reported) pairs; None if none.

    The port is the one most agreeing answers gave (a NAT may map our port differently per peer).
    """
    by_host: dict[str, set[str]] = {}
    reported: list[tuple[str, Address]] = []
    for peer, seen in answers:
        by_host.setdefault(peer[0], set()).add(seen[0])
        reported.append((peer[0], seen))
    votes = Counter(next(iter(ips)) for ips in by_host.values() if len(ips) == 1)
    if not votes:
        return None
    winner, count = votes.most_common(1)[0]
    total = sum(votes.values())
    lone_seed = len(by_host) == 1 and next(iter(by_host)) in set(seed_hosts)
    if not (count >= MIN_AGREEING and count * 2 > total) and not lone_seed:
        return None
    ports = Counter(seen[1] for _, seen in reported if seen[0] == winner)
    return winner, ports.most_common(1)[0][0]
