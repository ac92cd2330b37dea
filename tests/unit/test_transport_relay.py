"""The NAT relay's pure parts: contacts, RELAY frames, the relay's routes and the client's choices."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.transport import relay
from services.transport.framing import FrameKind

ALICE = "http://id.example:8084/alice.xml"
BOB = "http://id.example:8084/bob.xml"


def test_relay_contact_round_trip():
    contact = relay.relay_contact("10.0.0.5", 7771, ALICE)
    assert contact == f"proxy://10.0.0.5:7771/{ALICE}"
    assert relay.parse_relay_contact(contact) == ("10.0.0.5", 7771, ALICE)
    v6 = relay.relay_contact("fd00::1", 7771, ALICE)
    assert relay.parse_relay_contact(v6) == ("fd00::1", 7771, ALICE)


@pytest.mark.parametrize("contact", ["tcp://1.2.3.4:5", "proxy://1.2.3.4:5", "proxy://1.2.3.4:5/nothttp",
                                     "proxy://1.2.3.4:99999/http://x/a.xml", "proxy://:5/http://x/a.xml", ""])
def test_malformed_relay_contacts_are_refused(contact):
    assert relay.parse_relay_contact(contact) is None


def test_route_prefix_round_trip():
    body = bytearray(relay.encode_route(BOB) + b"PACKET")
    target, packet = relay.decode_route(body)
    assert target == BOB and bytes(packet) == b"PACKET"


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x00PACKET", b"\x00\x05ab", b"\x00\x03abc",
                                  b"\x00\x02\xff\xfeX", (relay.MAX_TARGET + 1).to_bytes(2, "big") + b"x" * 2000])
def test_malformed_relay_frames_are_refused(body):
    with pytest.raises(relay.RelayError):
        relay.decode_route(bytearray(body))


def test_route_target_length_is_bounded():
    with pytest.raises(relay.RelayError):
        relay.encode_route("http://x/" + "a" * relay.MAX_TARGET)
    with pytest.raises(relay.RelayError):
        relay.encode_route("")


@pytest.mark.parametrize("body", [b"[1]", b"not json", b"{" + b" " * relay.MAX_CONTROL_FRAME + b"}"])
def test_control_frames_must_be_small_json_objects(body):
    with pytest.raises(relay.RelayError):
        relay.parse_control(body)


def test_local_addresses():
    assert relay.is_local_address("127.0.0.1")
    assert not relay.is_local_address("192.0.2.77")  # TEST-NET-1: never an address of this host


class FakeLink:
    def __init__(self, idurl: str, ready: bool = True, broken: bool = False, address: str = "192.0.2.1"):
        self.peer_idurl = idurl
        self.peer_address = address
        self.is_ready = ready
        self.broken = broken
        self.frames: list[tuple[FrameKind, bytes]] = []

    async def send_frame(self, kind: FrameKind, parts: list[Any]) -> None:
        if self.broken:
            raise ConnectionError("closed")
        self.frames.append((kind, b"".join(bytes(p) for p in parts)))


def test_relay_routes_only_for_clients_that_asked():
    enabled = [True]
    server = relay.RelayServer(lambda: enabled[0], max_routes=1)
    alice, bob, carol = FakeLink(ALICE), FakeLink(BOB), FakeLink("http://id.example:8084/carol.xml")
    assert server.route_request(alice) == {"ok": True}
    assert server.route_request(bob) == {"ok": False, "reason": "too_many_routes"}

    asyncio.run(server.forward(carol, bytearray(relay.encode_route(ALICE) + b"signed packet")))
    asyncio.run(server.forward(carol, bytearray(relay.encode_route(BOB) + b"for nobody")))
    asyncio.run(server.forward(carol, bytearray(b"\x00")))
    assert alice.frames == [(FrameKind.PACKET, b"signed packet")]
    assert bob.frames == [] and server.counters.relayed_packets == 1 and server.counters.dropped == 2

    server.link_down(FakeLink(ALICE))  # another link of the same peer closing keeps the route
    assert server.route(ALICE) is alice
    server.link_down(alice)
    assert server.route(ALICE) is None

    enabled[0] = False
    assert server.route_request(alice) == {"ok": False, "reason": "proxy_server_disabled"}


def test_one_host_cannot_take_every_route():
    server = relay.RelayServer(lambda: True, max_routes=4, max_routes_per_host=2)
    crowd = [FakeLink(f"http://id.example:8084/sybil{i}.xml", address="198.51.100.7") for i in range(3)]
    assert [server.route_request(link)["ok"] for link in crowd] == [True, True, False]
    assert server.route_request(crowd[2]) == {"ok": False, "reason": "too_many_routes_from_host"}
    assert server.route_request(crowd[0]) == {"ok": True}  # a route already held is renewed
    assert server.route_request(FakeLink(ALICE, address="203.0.113.9")) == {"ok": True}  # others still get one
    server.link_down(crowd[0])
    assert server.route_request(crowd[2]) == {"ok": True}  # a freed place from that host can be taken again


def test_a_broken_route_drops_the_packet():
    server = relay.RelayServer(lambda: True)
    broken = FakeLink(ALICE, broken=True)
    server.route_request(broken)
    asyncio.run(server.forward(FakeLink(BOB), bytearray(relay.encode_route(ALICE) + b"x")))
    assert server.counters.dropped == 1 and server.counters.relayed_packets == 0


class FakeTcp:
    def __init__(self, links: dict[str, FakeLink]):
        self.links = links
        self.dialled: list[str] = []

    def listening(self) -> bool:
        return True

    async def connect(self, idurl: str, contacts: list[str]) -> FakeLink:
        self.dialled.append(idurl)
        if idurl not in self.links:
            raise ConnectionError("refused")
        return self.links[idurl]


def _client(tcp: FakeTcp, seen: str, candidates: list[str], answers: dict[str, dict[str, Any]],
            published: list[int], external: bool = False) -> relay.RelayClient:
    async def stun() -> str:
        return seen

    async def pick() -> list[str]:
        return candidates

    async def contacts(idurl: str) -> list[str]:
        return ["tcp://192.0.2.1:7771"]

    async def publish() -> None:
        published.append(1)

    hooks = relay.ClientHooks(enabled=lambda: True, reachable_by_config=lambda: external, stun=stun,
                              candidates=pick, contacts=contacts, publish=publish)
    client = relay.RelayClient(tcp, hooks, route_timeout=1.0)  # type: ignore[arg-type]

    original = client._ask_route

    async def answer(link: Any) -> dict[str, Any]:
        if link.peer_idurl in answers:
            return answers[link.peer_idurl]
        return await original(link)

    client._ask_route = answer  # type: ignore[method-assign]
    return client


def test_a_reachable_node_needs_no_relay():
    published: list[int] = []
    tcp = FakeTcp({})
    client = _client(tcp, "127.0.0.1", [ALICE], {}, published)
    asyncio.run(client.check())
    assert client.state == relay.DIRECT and client.behind_nat is False and tcp.dialled == []
    configured = _client(FakeTcp({}), "192.0.2.9", [ALICE], {}, published, external=True)
    asyncio.run(configured.check())
    assert configured.state == relay.DIRECT and published == []


def test_a_natted_node_takes_the_first_relay_that_accepts_and_fails_over():
    published: list[int] = []
    carol = "http://id.example:8084/carol.xml"
    tcp = FakeTcp({ALICE: FakeLink(ALICE), BOB: FakeLink(BOB)})
    client = _client(tcp, "192.0.2.9", [carol, ALICE, BOB],
                     {ALICE: {"ok": False, "reason": "too_many_routes"}, BOB: {"ok": True}}, published)
    asyncio.run(client.check())
    assert client.behind_nat is True and client.state == relay.CONNECTED
    assert client.relay_idurl == BOB and client.contact == relay.relay_contact("192.0.2.1", 7771, BOB)
    assert tcp.dialled == [carol, ALICE, BOB] and published == [1]

    # The relay's link closes: the client finds another one (the failed ones wait a while).
    tcp.links[carol] = FakeLink(carol)
    client.link_down(tcp.links[BOB])
    del tcp.links[BOB]
    asyncio.run(client.check())
    assert client.state == relay.FINDING and published == [1]  # carol and alice failed a moment ago
    client._failed.clear()
    client._ask_route = lambda link: _ok()  # type: ignore[method-assign,assignment]
    asyncio.run(client.check())
    assert client.relay_idurl == carol and client.changes == 2 and published == [1, 1]


async def _ok() -> dict[str, Any]:
    return {"ok": True}


def test_a_relay_that_stops_relaying_is_dropped():
    published: list[int] = []
    link = FakeLink(ALICE)
    client = _client(FakeTcp({ALICE: link}), "192.0.2.9", [ALICE], {ALICE: {"ok": True}}, published)
    asyncio.run(client.check())
    assert client.link is link
    client.routed(link, {"ok": False, "reason": "proxy_server_disabled"})
    assert client.link is None and ALICE in client._failed
