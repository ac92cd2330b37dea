"""The identity server on a real socket: its routes, and every bound a hostile client meets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest

from common import codec, crypto
from services.identity import document
from services.identity.idclient import parse_response
from services.identity.idserver import MAX_HEAD, MAX_UPLOAD, IdServer
from services.identity.idstore import IdServerStore

HOST = "127.0.0.1:8084"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[IdServer]:
    running = IdServer(IdServerStore(tmp_path / "idserver", {HOST}), 0, max_connections=3, request_timeout=0.5)
    await running.start()
    assert running._server is not None
    running.port = running._server.sockets[0].getsockname()[1]  # the port the system chose
    try:
        yield running
    finally:
        await running.stop()


async def _exchange(server: IdServer, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(raw)
        await writer.drain()
        return parse_response(await asyncio.wait_for(reader.read(), 10))
    finally:
        writer.close()


def _reason(body: bytes) -> str:
    return str(codec.loads(body)["error"]["reason"])


def _post(body: bytes, length: int | None = None) -> bytes:
    declared = len(body) if length is None else length
    return b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % declared + body


async def test_upload_then_read_it_back_and_list_it(server):
    doc = document.new_document(["http://127.0.0.1:8084/alice.xml"], ["tcp://127.0.0.1:7771"],
                                crypto.generate_private_key(1024))
    status, body = await _exchange(server, _post(doc.to_xml().encode()))
    assert status == 200 and codec.loads(body) == {"name": "alice", "revision": 1, "changed": True}
    status, body = await _exchange(server, b"GET /alice.xml HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and document.parse_verified(body) == doc
    assert await _exchange(server, b"GET / HTTP/1.0\r\n\r\n") == (200, b'{"identities":["alice"]}')


async def test_a_client_that_expects_100_continue_is_told_to_go_on(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = b"<identity>not signed</identity>"
    writer.write(b"POST /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    status, answer = parse_response(await asyncio.wait_for(reader.read(), 5))
    assert (status, _reason(answer)) == (400, "invalid_document")
    writer.close()


@pytest.mark.parametrize(("request_bytes", "status", "reason"), [
    (b"GET /nobody.xml HTTP/1.1\r\n\r\n", 404, "identity_not_found"),
    (b"GET /alice HTTP/1.1\r\n\r\n", 404, "not_found"),
    (b"GET /a/alice.xml HTTP/1.1\r\n\r\n", 404, "not_found"),
    (b"GET /..%2Falice.xml HTTP/1.1\r\n\r\n", 404, "not_found"),
    (b"PUT / HTTP/1.1\r\n\r\n", 405, "method_not_allowed"),
    (b"GET /upload HTTP/1.1\r\n\r\n", 405, "method_not_allowed"),
    (b"HELLO\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, "bad_request"),
    (b"POST /upload HTTP/1.1\r\n\r\n", 411, "length_required"),
    (b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411, "length_required"),
    (_post(b"", length=MAX_UPLOAD + 1), 413, "too_large"),  # refused before the body is sent
    (_post(b"<identity>not signed</identity>"), 400, "invalid_document"),
    (b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431, "headers_too_large"),
])
async def test_bad_requests_get_a_clear_error(server, request_bytes, status, reason):
    answer_status, body = await _exchange(server, request_bytes)
    assert (answer_status, _reason(body)) == (status, reason)


async def test_a_refused_body_sent_in_full_still_gets_its_answer(server):
    # The client sends a large body at once; unread, it would make the close a reset that
    # destroys the answer before the client reads it.
    status, body = await _exchange(server, _post(b"x" * (4 * MAX_UPLOAD)))
    assert (status, _reason(body)) == (413, "too_large")


async def test_a_client_that_sends_too_slowly_is_cut_off(server):
    status, body = await _exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    assert (status, _reason(body)) == (408, "request_timeout")
    status, body = await _exchange(server, _post(b"<identity", length=100))  # nor does the body
    assert (status, _reason(body)) == (408, "request_timeout")


async def test_connections_beyond_the_cap_are_closed_unanswered(server):
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    await asyncio.sleep(0.05)  # let the server take them: what is measured is its answer, below
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:  # closed with our request unread: the system resets the connection
        answer = b""
    assert answer == b""
    writer.close()
    for _, idle_writer in idle:
        idle_writer.close()


async def test_stop_closes_the_connections_it_holds(tmp_path):
    running = IdServer(IdServerStore(tmp_path / "idserver", {HOST}), 0, request_timeout=30)
    await running.start()
    assert running._server is not None
    port = running._server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\n")  # a request half sent
    await writer.drain()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(running.stop(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
