"""The catalog backup read back: the newest signed copy wins, and it lands under the key that was checked."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from common import codec, crypto
from common.errors import NodeError
from services.storage import backup_index
from services.storage.backup_index import IndexError_, open_index, open_newest, seal_index

OWNER = "http://h:8084/alice.xml"
STRANGER = "http://h:8084/mallory.xml"
SHARE = "share_0123$alice@h_8084"


class Keys:
    """The identity process's answers, with real keys: one master key per user, one share key."""

    def __init__(self) -> None:
        self.masters = {OWNER: crypto.generate_private_key(1024), STRANGER: crypto.generate_private_key(1024)}
        self.share = crypto.generate_private_key(1024)
        self.signer = OWNER

    async def public_key(self, key_id: str) -> Any:
        return self.share.public_key()

    async def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        assert key_id == SHARE
        return crypto.unwrap_key(self.share, wrapped)

    async def sign(self, data: bytes) -> bytes:
        return crypto.sign(self.masters[self.signer], hashlib.sha256(data).digest())

    async def verify(self, data: bytes, signature: bytes, idurl: str) -> bool:
        return crypto.verify(self.masters[idurl].public_key(), hashlib.sha256(data).digest(), signature)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def _doc(*paths: str) -> dict[str, Any]:
    return {"key_id": SHARE, "items": [{"path": p, "type": "file", "versions": []} for p in paths]}


def _seal_at(keys: Keys, doc: dict[str, Any], ms: int, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setattr(backup_index.time, "time", lambda: ms / 1000)
    blob = asyncio.run(seal_index(keys, doc, SHARE, OWNER))
    monkeypatch.undo()
    return blob


def _paths(doc: dict[str, Any]) -> list[str]:
    return [i["path"] for i in doc["items"]]


def test_the_newest_copy_is_restored_whatever_the_order(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _seal_at(keys, _doc("a.txt"), 1_000_000, monkeypatch)
    new = _seal_at(keys, _doc("a.txt", "b.txt"), 2_000_000, monkeypatch)
    for blobs in ([old, new], [new, old], [old, old, new]):
        assert _paths(asyncio.run(open_newest(keys, blobs, SHARE, OWNER))) == ["a.txt", "b.txt"]


def test_a_newer_stamp_signed_by_someone_else_does_not_win(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    genuine = _seal_at(keys, _doc("a.txt"), 1_000_000, monkeypatch)
    keys.signer = STRANGER
    try:
        forged = _seal_at(keys, _doc("evil.txt"), 9_000_000, monkeypatch)
    finally:
        keys.signer = OWNER
    errors: list[str] = []
    assert _paths(asyncio.run(open_newest(keys, [forged, genuine], SHARE, OWNER, errors))) == ["a.txt"]
    assert errors == ["index_bad_signature"]


def test_a_re_stamped_copy_does_not_verify(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _seal_at(keys, _doc("a.txt"), 1_000_000, monkeypatch)
    new = _seal_at(keys, _doc("a.txt", "b.txt"), 2_000_000, monkeypatch)
    outer = codec.loads(old)
    body = codec.loads(outer["body"].encode())
    body["exported"] = 3_000_000
    outer["body"] = codec.dumps(body).decode()
    errors: list[str] = []
    assert _paths(asyncio.run(open_newest(keys, [codec.dumps(outer), new], SHARE, OWNER, errors))) == ["a.txt",
                                                                                                        "b.txt"]
    assert errors == ["index_bad_signature"]


def _craft(keys: Keys, inner_doc: dict[str, Any], version: int = backup_index.FORMAT) -> bytes:
    """A backup as a hostile share owner makes it: genuine envelope for the share, any document inside."""
    session = crypto.new_session_key()
    body = codec.dumps({"v": version, "key_id": SHARE, "exported": 5_000_000,
                        "wrapped": crypto.b64(crypto.wrap_key(keys.share.public_key(), session)),
                        "data": crypto.b64(crypto.aes_encrypt(session, codec.dumps(inner_doc), aad=SHARE.encode()))})
    signature = crypto.sign(keys.masters[OWNER], hashlib.sha256(body).digest())
    return codec.dumps({"body": body.decode(), "signature": crypto.b64(signature), "signer": OWNER})


def test_a_document_naming_another_key_is_refused(keys: Keys) -> None:
    attack = _craft(keys, {"key_id": "master$bob@h_8084", "items": [{"path": "evil.txt", "type": "file"}]})
    with pytest.raises(IndexError_) as caught:
        asyncio.run(open_index(keys, attack, SHARE, OWNER))
    assert caught.value.reason == "index_key_mismatch"
    with pytest.raises(NodeError) as none:
        asyncio.run(open_newest(keys, [attack], SHARE, OWNER))
    assert none.value.reason == "index_not_found"


def test_the_envelope_must_name_the_key_asked_for(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = _seal_at(keys, _doc("a.txt"), 1_000_000, monkeypatch)
    with pytest.raises(IndexError_) as caught:
        asyncio.run(open_index(keys, blob, "master$alice@h_8084", OWNER))
    assert caught.value.reason == "index_key_mismatch"


def test_an_unstamped_format_is_refused(keys: Keys) -> None:
    with pytest.raises(IndexError_) as caught:
        asyncio.run(open_index(keys, _craft(keys, _doc("a.txt"), version=1), SHARE, OWNER))
    assert caught.value.reason == "index_format"
