"""The head of an HTTP/1.x message (start line and header fields), for the identity server and its client.

Both speak plain HTTP/1.1, one request per connection, on asyncio streams: identity servers
need three routes and two requests, and aiohttp would cost the identity process about 12 MB.
"""

from __future__ import annotations


class HeadError(ValueError):
    """Bytes that are not the head of an HTTP/1.x message."""


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The start line and the header fields (names lower-cased) of a head without its blank line.

    Raises `HeadError` for a head that is not Latin-1 text of `Name: value` lines.
    """
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HeadError("not text") from None
    start_line, *lines = text.split("\r\n")
    fields: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HeadError(f"malformed header line {line[:80]!r}")
        fields[name.lower()] = value.strip()
    return start_line, fields
