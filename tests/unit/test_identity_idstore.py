"""Identity server rules: signature, name ownership, revisions, own sources."""

from __future__ import annotations

import dataclasses

import pytest

from common import crypto
from services.identity import document
from services.identity.idstore import IdServerStore, UploadRefusedError

HOST = "127.0.0.1:8084"
CONTACTS = ["tcp://127.0.0.1:7771"]


@pytest.fixture(scope="module")
def keys():
    return [crypto.generate_private_key(1024) for _ in range(2)]


@pytest.fixture
def store(tmp_path):
    return IdServerStore(tmp_path / "idserver", {HOST})


def _doc(key, revision=1, sources=("http://127.0.0.1:8084/alice.xml",), contacts=CONTACTS):
    return document.new_document(list(sources), list(contacts), key, revision=revision)


def _refused(store, xml) -> UploadRefusedError:
    with pytest.raises(UploadRefusedError) as err:
        store.accept(xml.encode() if isinstance(xml, str) else xml)
    return err.value


def test_accepts_and_serves_a_signed_identity(store, keys):
    doc = _doc(keys[0])
    result = store.accept(doc.to_xml().encode())
    assert (result.name, result.revision, result.changed) == ("alice", 1, True)
    assert document.parse_verified(store.read("alice")) == doc
    assert store.names() == ["alice"]
    assert store.accept(doc.to_xml().encode()).changed is False


def test_refuses_bad_signature_other_key_and_stale_revisions(store, keys):
    store.accept(_doc(keys[0], revision=2).to_xml().encode())
    forged = dataclasses.replace(_doc(keys[0], revision=3), contacts=("tcp://6.6.6.6:1",))
    err = _refused(store, forged.to_xml())
    assert (err.status, err.reason) == (400, "invalid_signature")
    err = _refused(store, _doc(keys[1], revision=9).to_xml())
    assert (err.status, err.reason) == (409, "name_taken")
    err = _refused(store, _doc(keys[0], revision=1).to_xml())
    assert (err.status, err.reason) == (409, "stale_revision")
    err = _refused(store, _doc(keys[0], revision=2, contacts=["tcp://127.0.0.1:1"]).to_xml())
    assert (err.status, err.reason) == (409, "stale_revision")
    assert store.accept(_doc(keys[0], revision=3).to_xml().encode()).revision == 3


def test_refuses_identities_that_do_not_list_this_server_unless_it_holds_the_name(store, keys):
    elsewhere = ("http://10.0.0.1:9000/alice.xml",)
    err = _refused(store, _doc(keys[0], sources=elsewhere).to_xml())
    assert (err.status, err.reason) == (400, "wrong_server")
    store.accept(_doc(keys[0]).to_xml().encode())
    # A node that moved away tells its old server: same key, newer revision.
    assert store.accept(_doc(keys[0], revision=2, sources=elsewhere).to_xml().encode()).changed


def test_refuses_garbage(store):
    assert _refused(store, b"<identity/>").reason == "invalid_document"
    assert store.read("../etc/passwd") is None and store.read("nobody") is None
