"""Framing and handshake messages: incremental decoding, limits, transcripts."""

from __future__ import annotations

import pytest

from common import crypto
from services.transport import handshake as hs
from services.transport.framing import FrameDecoder, FrameError, FrameKind, frame_header


def _feed(decoder: FrameDecoder, data: bytes, step: int) -> list[tuple[FrameKind, bytes]]:
    frames = []
    pos = 0
    while pos < len(data):
        buf = decoder.buffer()
        n = min(step, len(buf), len(data) - pos)
        buf[:n] = data[pos:pos + n]
        pos += n
        frame = decoder.advance(n)
        if frame:
            frames.append((frame[0], bytes(frame[1])))
    return frames


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_frames_decode_whatever_the_read_sizes(step):
    stream = (frame_header(FrameKind.HELLO, 3) + b"abc" + frame_header(FrameKind.READY, 0)
              + frame_header(FrameKind.PACKET, 10000) + bytes(range(100)) * 100)
    frames = _feed(FrameDecoder(), stream, step)
    assert frames == [(FrameKind.HELLO, b"abc"), (FrameKind.READY, b""), (FrameKind.PACKET, bytes(range(100)) * 100)]


def test_body_buffer_is_sized_once_and_progress_is_visible():
    decoder = FrameDecoder()
    _feed(decoder, frame_header(FrameKind.PACKET, 1000) + b"x" * 400, 4096)
    assert decoder.pending_body == (400, 1000)
    assert len(decoder.buffer()) == 600


def test_oversized_and_unknown_frames_raise():
    with pytest.raises(FrameError) as big:
        _feed(FrameDecoder(max_frame=100), frame_header(FrameKind.PACKET, 101), 64)
    assert big.value.reason == "oversized"
    with pytest.raises(FrameError) as odd:
        _feed(FrameDecoder(), b"\x00\x00\x00\x00\x63", 64)
    assert odd.value.reason == "unknown_kind"


def test_handshake_proofs_bind_both_ends_and_nonces():
    key = crypto.generate_private_key(1024)
    n1, n2 = hs.new_nonce(), hs.new_nonce()
    proof = crypto.sign(key, hs.transcript("A", "B", n1, n2))
    assert crypto.verify(key.public_key(), hs.transcript("A", "B", n1, n2), proof)
    for other in (hs.transcript("B", "A", n1, n2), hs.transcript("A", "C", n1, n2), hs.transcript("A", "B", n2, n1)):
        assert not crypto.verify(key.public_key(), other, proof)


def test_hello_round_trip_and_validation():
    nonce = hs.new_nonce()
    hello = hs.decode_hello(hs.encode_hello("http://h:1/a.xml", nonce, to="http://h:1/b.xml", signature=b"sig"))
    assert (hello.idurl, hello.nonce, hello.to, hello.signature) == ("http://h:1/a.xml", nonce, "http://h:1/b.xml",
                                                                      b"sig")
    for bad in (b"not json", b"[]", b'{"v": 2, "idurl": "a", "nonce": ""}', b'{"v": 1, "idurl": "a", "nonce": "AAAA"}',
                b'{"v": 1, "nonce": "AAAA"}', b"x" * 20000):
        with pytest.raises(hs.HandshakeError):
            hs.decode_hello(bad)
    assert hs.decode_auth(hs.encode_auth(b"\x01\x02")) == b"\x01\x02"
    with pytest.raises(hs.HandshakeError):
        hs.decode_auth(b'{"sig": "%%%"}')
