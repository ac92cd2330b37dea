"""The signed packet: signing digest, wire round trip without copies, refusal of bad input."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

import pytest

from common import crypto
from common import packet as packets
from common.packet import PacketError


@pytest.fixture(scope="module")
def key():
    return crypto.generate_private_key(1024)


def _signed(key, payload=b'{"a":1}', **kw) -> packets.Packet:
    pkt = packets.create("Message", "http://h:1/a.xml", "http://h:1/b.xml", payload, key_id="master$a@h_1", **kw)
    return pkt.signed(crypto.sign(key, packets.signing_digest(pkt)))


def _wire(pkt) -> bytes:
    return b"".join(bytes(p) for p in packets.encode(pkt))


def test_round_trip_keeps_every_field_and_the_signature_valid(key):
    pkt = _signed(key, payload=b"\x00\x01" * 1000, binary=True, packet_id="pid-1", owner_idurl="http://h:1/o.xml")
    parts = packets.encode(pkt)
    assert parts[2] is pkt.payload  # the payload is written as is, never joined or base64-encoded
    back = packets.decode(bytearray(_wire(pkt)))
    assert isinstance(back.payload, memoryview) and bytes(back.payload) == pkt.payload
    assert (back.command, back.owner_idurl, back.creator_idurl, back.packet_id, back.remote_idurl, back.key_id,
            back.date, back.binary) == (pkt.command, pkt.owner_idurl, pkt.creator_idurl, "pid-1", pkt.remote_idurl,
                                        pkt.key_id, pkt.date, True)
    assert crypto.verify(key.public_key(), packets.signing_digest(back), back.signature)


@pytest.mark.parametrize("field_name,value", [
    ("command", "Ack"), ("owner_idurl", "http://h:1/x.xml"), ("creator_idurl", "http://h:1/x.xml"),
    ("packet_id", "other"), ("remote_idurl", "http://h:1/x.xml"), ("key_id", "other$a@h_1"),
    ("date", 1.5), ("payload", b'{"a":2}'), ("binary", True),
])
def test_signature_covers_every_field(key, field_name, value):
    pkt = _signed(key)
    altered = replace(pkt, **{field_name: value})
    assert not crypto.verify(key.public_key(), packets.signing_digest(altered), pkt.signature)


@pytest.mark.parametrize("frame,reason", [
    (b"", "malformed"),
    (b"XXXX" + b"\x00" * 8, "malformed"),
    (packets.PREFIX.pack(packets.MAGIC, 10**6, 0), "oversized"),
    (packets.PREFIX.pack(packets.MAGIC, 0, packets.MAX_PAYLOAD_SIZE + 1), "oversized"),
    (packets.PREFIX.pack(packets.MAGIC, 2, 0) + b"{}x", "malformed"),
    (packets.PREFIX.pack(packets.MAGIC, 2, 0) + b"[]", "malformed"),
    (packets.PREFIX.pack(packets.MAGIC, 2, 0) + b"{}", "malformed"),
])
def test_malformed_frames_raise_packet_error(frame, reason):
    with pytest.raises(PacketError) as err:
        packets.decode(frame)
    assert err.value.reason == reason


def test_header_fields_are_type_checked(key):
    wire = _wire(_signed(key))
    for old, new in ((b'"c":"Message"', b'"c":"Nope!!!"'), (b'"b":false', b'"b":"yes"')):
        assert old in wire
        with pytest.raises(PacketError):
            packets.decode(wire.replace(old, new))


def test_unknown_command_and_oversized_payload_are_refused_at_creation():
    with pytest.raises(PacketError):
        packets.create("Bogus", "a", "b", b"", key_id="k")
    with pytest.raises(PacketError) as err:
        packets.create("Data", "a", "b", memoryview(bytes(packets.MAX_PAYLOAD_SIZE + 1)), key_id="k")
    assert err.value.reason == "payload_too_large"


def test_freshness_window(key):
    now = time.time()
    packets.check_fresh(_signed(key, date=now - 599), now)
    for skew in (-601, 601):
        with pytest.raises(PacketError) as err:
            packets.check_fresh(_signed(key, date=now + skew), now)
        assert err.value.reason == "stale"


def test_packet_ids_differ():
    assert len({packets.new_packet_id() for _ in range(1000)}) == 1000


def test_payload_digest_is_sha256():
    assert packets.payload_digest(b"abc") == hashlib.sha256(b"abc").digest()
    assert packets.payload_digest(memoryview(b"xabcx")[1:4]) == hashlib.sha256(b"abc").digest()


def test_signing_digest_covers_the_payload_through_its_hash(key):
    pkt = _signed(key, payload=b"\x07" * 5000, binary=True)
    known = packets.payload_digest(pkt.payload)
    assert packets.signing_digest(pkt, known) == packets.signing_digest(pkt)
    assert crypto.verify(key.public_key(), packets.signing_digest(pkt, known), pkt.signature)
    # Only the hash (and the length) of the payload enter the digest: a wrong hash breaks the signature.
    other = packets.payload_digest(b"\x08" * 5000)
    assert not crypto.verify(key.public_key(), packets.signing_digest(pkt, other), pkt.signature)
    assert packets.signing_digest(replace(pkt, payload=b"\x08" * 5000), known) == packets.signing_digest(pkt)
    with pytest.raises(ValueError):
        packets.signing_digest(pkt, known.hex().encode())


def test_payload_hash_rides_on_the_packet_but_not_on_the_wire(key):
    digest = packets.payload_digest(b"[1]")
    pkt = packets.create("Ack", "a", "b", b"[1]", key_id="k", payload_sha256=digest)
    assert pkt.payload_sha256 == digest and pkt.hashed(b"\x00" * 32) == pkt  # not part of equality
    signed = pkt.signed(crypto.sign(key, packets.signing_digest(pkt, pkt.payload_sha256)))
    back = packets.decode(_wire(signed))
    assert back.payload_sha256 is None  # never trusted from the wire: the receiver hashes
    assert crypto.verify(key.public_key(), packets.signing_digest(back), back.signature)
