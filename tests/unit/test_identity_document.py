"""Identity documents: signing, the XML format, and refusing anything tampered with."""

from __future__ import annotations

import dataclasses

import pytest

from common import crypto
from services.identity import document
from services.identity.document import DocumentError

SOURCES = ["http://127.0.0.1:8084/alice.xml", "http://id.example.org:80/alice.xml"]
CONTACTS = ["tcp://127.0.0.1:7771"]


@pytest.fixture(scope="module")
def key():
    return crypto.generate_private_key(1024)


@pytest.fixture(scope="module")
def other_key():
    return crypto.generate_private_key(1024)


def test_new_document_is_signed_and_names_follow_the_primary_source(key):
    doc = document.new_document(SOURCES, CONTACTS, key)
    assert doc.is_valid()
    assert (doc.idurl, doc.name, doc.global_id) == (SOURCES[0], "alice", "alice@127.0.0.1_8084")
    assert doc.revision == 1 and doc.publickey.startswith("ssh-rsa ")
    assert doc.summary() == {"idurl": SOURCES[0], "global_id": "alice@127.0.0.1_8084", "name": "alice",
                             "contacts": CONTACTS, "publickey": doc.publickey, "revision": 1, "sources": SOURCES}


def test_xml_roundtrip_keeps_every_field_and_the_signature(key):
    doc = document.new_document(SOURCES, CONTACTS, key, revision=7)
    xml = doc.to_xml()
    for tag in ("sources", "contacts", "certificates", "scrubbers", "postage", "date", "version", "revision",
                "publickey", "signature"):
        assert f"<{tag}" in xml
    assert "<source>http://127.0.0.1:8084/alice.xml</source>" in xml
    parsed = document.parse_verified(xml)
    assert parsed == doc and parsed.revision == 7


def test_reference_info_has_the_reference_fields(key):
    info = document.new_document(SOURCES, CONTACTS, key).reference_info()
    assert set(info) == {"name", "idurl", "global_id", "sources", "contacts", "certificates", "scrubbers",
                         "postage", "date", "version", "revision", "publickey", "signature"}
    assert info["revision"] == "1" and info["postage"] == "1"


@pytest.mark.parametrize("change", [
    {"contacts": ("tcp://6.6.6.6:1",)},
    {"revision": 2},
    {"sources": ("http://127.0.0.1:8084/alice.xml",)},
    {"date": "Jan 01, 2000"},
    {"certificates": ("forged",)},
])
def test_any_changed_field_breaks_the_signature(key, change):
    doc = dataclasses.replace(document.new_document(SOURCES, CONTACTS, key), **change)
    assert not doc.is_valid()
    with pytest.raises(DocumentError):
        document.parse_verified(doc.to_xml())


def test_swapped_public_key_is_refused(key, other_key):
    doc = document.new_document(SOURCES, CONTACTS, key)
    swapped = dataclasses.replace(doc, publickey=crypto.public_key_to_ssh(other_key.public_key()))
    assert not swapped.is_valid()


def test_tampered_xml_text_is_refused(key):
    xml = document.new_document(SOURCES, CONTACTS, key).to_xml()
    with pytest.raises(DocumentError, match="signature"):
        document.parse_verified(xml.replace("tcp://127.0.0.1:7771", "tcp://127.0.0.1:7772"))
    with pytest.raises(DocumentError):
        document.parse_verified(xml.replace("<signature>", "<signature>AAAA"))


def test_signing_with_a_foreign_key_is_refused(key, other_key):
    doc = document.new_document(SOURCES, CONTACTS, key)
    with pytest.raises(DocumentError):
        doc.signed(other_key)


@pytest.mark.parametrize("xml", [
    "<identity><sources></sources></identity>",
    "not xml at all",
    "<other/>",
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><identity/>',
    "<identity>" + "x" * (document.MAX_DOCUMENT_SIZE + 1) + "</identity>",
])
def test_malformed_documents_are_refused(xml):
    with pytest.raises(DocumentError):
        document.parse(xml)


def test_sources_must_share_one_valid_name(key):
    with pytest.raises(DocumentError):
        document.new_document(["http://h:1/alice.xml", "http://h:2/bob.xml"], CONTACTS, key)
    with pytest.raises(DocumentError):
        document.new_document(["http://h:1/Bad Name.xml"], CONTACTS, key)
    with pytest.raises(DocumentError):
        document.new_document(SOURCES, [], key)


def test_canonical_form_excludes_only_the_signature(key):
    doc = document.new_document(SOURCES, CONTACTS, key)
    assert dataclasses.replace(doc, signature="x").canonical() == doc.canonical()
    assert dataclasses.replace(doc, postage="2").canonical() != doc.canonical()


def test_only_utf8_documents_are_parsed():
    bomb = ('<?xml version="1.0" encoding="utf-16"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><identity><sources><source>&lol2;</source></sources></identity>')
    for raw in (bomb.encode("utf-16"), bomb.encode("utf-8"),
                b'<?xml version="1.0" encoding="latin-1"?><identity/>', b"\xff\xfe<\x00i\x00"):
        with pytest.raises(DocumentError):
            document.parse(raw)
