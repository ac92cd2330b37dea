"""Who belongs to a group, provable to a broker that cannot read the group's messages.

A group is its RSA key `group_<hex>$<creator global id>`. Two signatures make a member:

- the *certificate*: the creator's master key signs the group key's id and public half (the
  identity process's `key_get(generate_signature=True)`; shared with the key to members). A broker
  checks it once against the creator's identity and from then on knows the group's public key;
- the *proof*: the group key itself signs `bitdust-group-member:<group>:<member IDURL>`. Only a
  holder of the group's private key can make it, and it names the member, so the transport's
  packet signature (which proves the packet's creator) ties it to the node that sent it.

Pure functions and a small cache, no bus.
"""

from __future__ import annotations

import re
from typing import Any

from common import rsa_public
from common.errors import InvalidArgumentError
from common.ids import key_signature_payload
from common.ids import idurl_of

GROUP_PREFIX = "group_"
_GROUP_RE = re.compile(r"^group_[0-9a-zA-Z_.\-]{1,64}\$[^$@\s]+@[^$@\s]+$")


class MembershipError(Exception):
    """A certificate or proof that does not check out; `reason` is the stable code it is counted under."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


def check_group_id(group_key_id: Any) -> str:
    """A well-formed group key id; raises `InvalidArgumentError` otherwise."""
    if not isinstance(group_key_id, str) or not _GROUP_RE.match(group_key_id.strip()):
        raise InvalidArgumentError("group_key_id must be a group key id (group_<id>$name@host_port)",
                                   reason="invalid_group_key_id")
    return group_key_id.strip()


def is_group_id(text: Any) -> bool:
    return isinstance(text, str) and bool(_GROUP_RE.match(text))


def creator_of(group_key_id: str) -> str:
    """The IDURL of the user who created the group (named in its key id)."""
    return idurl_of(group_key_id)


def alias_of(group_key_id: str) -> str:
    return group_key_id.split("$", 1)[0]


def cert_payload(group_key_id: str, public_ssh: str) -> bytes:
    """What the creator's master key signs to vouch for the group key."""
    return key_signature_payload(group_key_id, public_ssh)


def proof_payload(group_key_id: str, member_idurl: str) -> bytes:
    """What a member signs with the group key to show it holds it."""
    return f"bitdust-group-member:{group_key_id}:{member_idurl}".encode()


class ProofCache:
    """Checks member proofs against a group's public key, remembering the ones that passed."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._passed: set[tuple[str, str, str]] = set()
        self._keys: dict[str, Any] = {}

    def check(self, group_key_id: str, public_ssh: str, member_idurl: str, proof: Any) -> None:
        """Raises `MembershipError("not_member")` unless `proof` is the member's valid proof."""
        if not isinstance(proof, str) or not proof:
            raise MembershipError("not_member", "no membership proof")
        key = (group_key_id, member_idurl, proof)
        if key in self._passed:
            return
        public = self._keys.get(public_ssh)
        if public is None:
            try:
                public = rsa_public.load_public_key(public_ssh)
            except rsa_public.CryptoError:
                raise MembershipError("bad_certificate", "the group public key is not valid") from None
            self._keys[public_ssh] = public
        try:
            signature = rsa_public.unb64(proof)
        except rsa_public.CryptoError:
            raise MembershipError("not_member", "the membership proof is not base64") from None
        if not rsa_public.verify(public, proof_payload(group_key_id, member_idurl), signature):
            raise MembershipError("not_member", "the membership proof does not verify")
        if len(self._passed) >= self.size:
            self._passed.clear()
        self._passed.add(key)
