"""The identity servers' HTTP client: response parsing, bounds, and a real exchange on loopback."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import NotFoundError, UnavailableError
from services.identity import idclient
from services.identity.idclient import HttpError, IdServerClient, parse_response


def test_parse_response_with_a_length():
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef") == (200, b"abc")


def test_parse_response_chunked():
    raw = b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n"
    assert parse_response(raw) == (409, b"abcde")


def test_parse_response_until_close():
    assert parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope") == (404, b"nope")


@pytest.mark.parametrize("raw", [b"", b"HTTP/1.1 200 OK\r\n", b"SSH-2.0-x\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab"])
def test_malformed_answers_are_refused(raw):
    with pytest.raises(HttpError):
        parse_response(raw)


async def _serve(answer: bytes, seen: list[bytes]) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_download_and_upload_against_a_server():
    seen: list[bytes] = []
    server, port = await _serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n<id/>", seen)
    async with server:
        assert await IdServerClient().download(f"http://127.0.0.1:{port}/alice.xml") == b"<id/>"
    assert seen[0].startswith(b"GET /alice.xml HTTP/1.1\r\nHost: 127.0.0.1:")

    refusal = b'{"error": {"message": "taken", "reason": "name_taken"}}'
    server, port = await _serve(b"HTTP/1.1 409 Conflict\r\nContent-Length: %d\r\n\r\n" % len(refusal) + refusal, seen)
    async with server:
        with pytest.raises(Exception) as err:
            await IdServerClient().upload(f"127.0.0.1:{port}", "<identity/>")
    assert getattr(err.value, "reason", "") == "name_taken" and getattr(err.value, "status", 0) == 409


async def test_oversized_and_unreachable_servers(monkeypatch):
    monkeypatch.setattr(idclient, "MAX_RESPONSE", 100)
    server, port = await _serve(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 500, [])
    async with server:
        with pytest.raises(NotFoundError):
            await IdServerClient().download(f"http://127.0.0.1:{port}/big.xml")
    with pytest.raises(UnavailableError):
        await IdServerClient(timeout=2).upload(f"127.0.0.1:{port}", "<identity/>")  # closed now
