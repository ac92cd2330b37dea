"""The identity document: a node's signed business card, as XML like the reference engine's.

    <identity>
      <sources><source>http://127.0.0.1:8084/alice.xml</source></sources>
      <contacts><contact>tcp://127.0.0.1:7771</contact></contacts>
      <certificates/> <scrubbers/> <postage>1</postage> <date>Nov 26, 2026</date>
      <version>…</version> <revision>1</revision> <publickey>ssh-rsa …</publickey>
      <signature>base64 RSA-PSS</signature>
    </identity>

Unlike the reference engine (which left the public key and certificates out of the signed hash)
the signature covers a canonical JSON serialization of every field but the signature, so no
field can be swapped without the master key.
"""

from __future__ import annotations

import datetime
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from common import crypto
from common.errors import InvalidArgumentError
from common import ids

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

MAX_DOCUMENT_SIZE = 64 * 1024
MAX_SOURCES = 10
MAX_LIST_ITEMS = 32
MAX_ITEM_LENGTH = 1024
SOFTWARE_VERSION = "bitdust-node 0.1.0"

_LISTS = (("sources", "source"), ("contacts", "contact"), ("certificates", "certificate"), ("scrubbers", "scrubber"))
_SCALARS = ("postage", "date", "version", "revision", "publickey", "signature")


class DocumentError(ValueError):
    """An identity document that is malformed, inconsistent or not validly signed."""


@dataclass(frozen=True)
class IdentityDocument:
    """One revision of an identity; immutable so a verified document stays verified."""

    sources: tuple[str, ...]
    contacts: tuple[str, ...]
    publickey: str
    revision: int = 1
    date: str = ""
    version: str = SOFTWARE_VERSION
    postage: str = "1"
    certificates: tuple[str, ...] = field(default_factory=tuple)
    scrubbers: tuple[str, ...] = field(default_factory=tuple)
    signature: str = ""

    # ---- names -----------------------------------------------------------------------------

    @property
    def primary(self) -> ids.IdUrl:
        return ids.parse_idurl(self.sources[0])

    @property
    def idurl(self) -> str:
        return self.sources[0]

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def global_id(self) -> str:
        return self.primary.global_id

    def public_key(self) -> rsa.RSAPublicKey:
        """The master public key; raises `DocumentError` when it does not parse."""
        try:
            return crypto.load_public_key(self.publickey)
        except crypto.CryptoError as exc:
            raise DocumentError(f"bad public key: {exc}") from None

    # ---- signing ---------------------------------------------------------------------------

    def canonical(self) -> bytes:
        """What the signature covers: every field but the signature, in one stable encoding."""
        return json.dumps(self._content(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def _content(self) -> dict[str, Any]:
        """Every field but the signature."""
        return {
            "sources": list(self.sources),
            "contacts": list(self.contacts),
            "certificates": list(self.certificates),
            "scrubbers": list(self.scrubbers),
            "postage": self.postage,
            "date": self.date,
            "version": self.version,
            "revision": self.revision,
            "publickey": self.publickey,
        }

    def signed(self, key: rsa.RSAPrivateKey) -> IdentityDocument:
        """A copy signed by `key`, whose public half must be this document's public key."""
        if crypto.public_key_to_ssh(key.public_key()) != self.publickey:
            raise DocumentError("the signing key is not the identity's master key")
        return replace(self, signature=crypto.b64(crypto.sign(key, self.canonical())))

    def is_valid(self) -> bool:
        """True when the signature is the master key's over this exact content."""
        try:
            signature = crypto.unb64(self.signature)
            return crypto.verify(self.public_key(), self.canonical(), signature)
        except (crypto.CryptoError, DocumentError):
            return False

    # ---- views -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The shape of the internal `identity.my_identity` / `identity.fetch` replies."""
        return {
            "idurl": self.idurl,
            "global_id": self.global_id,
            "name": self.name,
            "contacts": list(self.contacts),
            "publickey": self.publickey,
            "revision": self.revision,
            "sources": list(self.sources),
        }

    def reference_info(self) -> dict[str, Any]:
        """The reference engine's `identity_get` result (revision and postage as text, as it sent)."""
        return dict(self._content(), name=self.name, idurl=self.idurl, global_id=self.global_id,
                    revision=str(self.revision), signature=self.signature)

    # ---- XML -------------------------------------------------------------------------------

    def to_xml(self) -> str:
        root = ET.Element("identity")
        for tag, item_tag in _LISTS:
            parent = ET.SubElement(root, tag)
            for item in getattr(self, tag):
                ET.SubElement(parent, item_tag).text = item
        for tag in _SCALARS:
            ET.SubElement(root, tag).text = str(getattr(self, tag))
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def today() -> str:
    """The date as the reference engine writes it (`Nov 26, 2026`)."""
    return datetime.date.today().strftime("%b %d, %Y")


def new_document(sources: list[str], contacts: list[str], key: rsa.RSAPrivateKey,
                 revision: int = 1) -> IdentityDocument:
    """A fresh document for `sources` signed by `key`."""
    doc = IdentityDocument(
        sources=tuple(sources),
        contacts=tuple(contacts),
        publickey=crypto.public_key_to_ssh(key.public_key()),
        revision=revision,
        date=today(),
    )
    check(doc)
    return doc.signed(key)


_ENCODING = re.compile(r"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']+)["'][^>]*\?>""")


def parse(xml: bytes | str) -> IdentityDocument:
    """Parse and check a document, without verifying its signature; raises `DocumentError`."""
    raw = xml.encode("utf-8") if isinstance(xml, str) else xml
    if len(raw) > MAX_DOCUMENT_SIZE:
        raise DocumentError(f"identity document is larger than {MAX_DOCUMENT_SIZE} bytes")
    # Only UTF-8: any other encoding would hide a DTD from the check below (UTF-16 interleaves zeros).
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError("identity document must be UTF-8") from None
    text = text.removeprefix("\ufeff")
    declared = _ENCODING.match(text)
    if declared and declared.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise DocumentError(f"identity document must be UTF-8, not {declared.group(1)}")
    # Entity declarations are the vector of XML bombs; an identity never needs them.
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise DocumentError("identity document must not declare a DTD or entities")
    try:
        root = ET.fromstring(_ENCODING.sub("", text, count=1))
    except ET.ParseError as exc:
        raise DocumentError(f"identity document is not well-formed XML: {exc}") from None
    if root.tag != "identity":
        raise DocumentError("root element must be <identity>")
    values: dict[str, Any] = {}
    for tag, item_tag in _LISTS:
        parent = root.find(tag)
        items = [] if parent is None else [(child.text or "").strip() for child in parent if child.tag == item_tag]
        values[tag] = tuple(items)
    for tag in _SCALARS:
        element = root.find(tag)
        values[tag] = "" if element is None else (element.text or "").strip()
    try:
        values["revision"] = int(values["revision"])
    except ValueError:
        raise DocumentError("revision must be an integer") from None
    doc = IdentityDocument(**values)
    check(doc)
    return doc


def parse_verified(xml: bytes | str) -> IdentityDocument:
    """Parse a document and verify its signature; raises `DocumentError`."""
    doc = parse(xml)
    if not doc.is_valid():
        raise DocumentError("identity document signature is not valid")
    return doc


def check(doc: IdentityDocument) -> None:
    """Raise `DocumentError` when the fields are inconsistent (names, sizes, key)."""
    if not doc.sources:
        raise DocumentError("identity document has no sources")
    if len(doc.sources) > MAX_SOURCES or len(set(doc.sources)) != len(doc.sources):
        raise DocumentError("identity sources must be distinct and at most %d" % MAX_SOURCES)
    names = set()
    for source in doc.sources:
        try:
            names.add(ids.parse_idurl(source).name)
        except InvalidArgumentError as exc:
            raise DocumentError(exc.message) from None
    if len(names) != 1:
        raise DocumentError("all identity sources must carry the same name")
    if not doc.contacts:
        raise DocumentError("identity document has no contacts")
    for tag, _ in _LISTS:
        items = getattr(doc, tag)
        if len(items) > MAX_LIST_ITEMS or any(len(item) > MAX_ITEM_LENGTH for item in items):
            raise DocumentError(f"too many or too long {tag}")
    if doc.revision < 0:
        raise DocumentError("revision must not be negative")
    doc.public_key()
