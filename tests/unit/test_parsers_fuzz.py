"""What peers send is parsed by pure code; fuzzed here, each parser fails only with its own error.

A parser that raised anything else (IndexError, UnicodeDecodeError, RecursionError, …) on hostile
input would surface as an unhandled error in the process that read it.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import packet as packets
from services.dht import records
from services.identity import document
from services.transport import handshake as hs
from services.transport.framing import HEADER, FrameDecoder, FrameError, FrameKind

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


def _valid_packet() -> bytes:
    pkt = packets.create("Data", "http://a:1/a.xml", "http://b:1/b.xml", b"payload", binary=True, key_id="k",
                         packet_id="p1", date=1_700_000_000.0)
    pkt = pkt.hashed(b"\0" * 32).signed(b"sig")
    return b"".join(bytes(part) for part in packets.encode(pkt))


VALID_PACKET = _valid_packet()


@FUZZ
@given(st.binary(max_size=2048))
def test_packet_decode_of_random_bytes(data: bytes) -> None:
    try:
        packets.decode(bytearray(data))
    except packets.PacketError:
        pass


@FUZZ
@given(st.data())
def test_packet_decode_of_a_mutated_packet(data: st.DataObject) -> None:
    frame = bytearray(VALID_PACKET)
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(frame) - 1))
        frame[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        packets.decode(frame[:cut])
    except packets.PacketError:
        pass


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=20))
def test_frame_decoder_on_random_chunks(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame=4096)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                target = decoder.buffer()
                n = min(len(target), len(view))
                target[:n] = view[:n]
                view = view[n:]
                frame = decoder.advance(n)
                if frame is not None:
                    assert isinstance(frame[0], FrameKind) and len(frame[1]) <= 4096
    except FrameError as err:
        assert str(err) in ("oversized", "unknown_kind")


def test_frame_decoder_refuses_an_oversized_header_before_allocating() -> None:
    decoder = FrameDecoder(max_frame=1024)
    header = HEADER.pack(2**31, FrameKind.PACKET)
    decoder.buffer()[: len(header)] = header
    with pytest.raises(FrameError):
        decoder.advance(len(header))


@FUZZ
@given(st.binary(max_size=512) | json_values.map(lambda v: json.dumps(v).encode()))
def test_handshake_frames(body: bytes) -> None:
    for decode in (hs.decode_hello, hs.decode_auth):
        try:
            decode(body)
        except hs.HandshakeError:
            pass


@FUZZ
@given(json_values | st.text(max_size=200) | st.binary(max_size=200))
def test_dht_envelopes(value: object) -> None:
    for candidate in (value, json.dumps(value) if not isinstance(value, bytes) else value):
        try:
            records.decode_envelope(candidate)
        except records.RecordError:
            pass


@FUZZ
@given(st.binary(max_size=1024) | st.text(max_size=400).map(lambda t: f"<identity>{t}</identity>".encode()))
def test_identity_documents(raw: bytes) -> None:
    try:
        document.parse(raw)
    except document.DocumentError:
        pass
