"""Key API methods of the identity process, and the `Key`/`AuditKey` packets from other nodes.

A mixin of `IdentityService`: it uses the service's keyring, identity and identity fetching.
Sharing and auditing go through the transport process (`transport.send`); when it is down the
bus answers 503 and so do these methods.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from common import codec, crypto, subjects
from common.endpoint import Reply, endpoint
from common.errors import ConflictError, InvalidArgumentError, NodeError, NotFoundError
from common.process import ServiceBase
from common.values import as_bool
from common import ids
from services.identity import keyshare
from common.ids import key_signature_payload
from services.identity.keyring import KeyRecord
from services.identity.keyshare import ShareError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from services.identity.document import IdentityDocument
    from services.identity.keyring import Keyring

log = logging.getLogger(__name__)

KEY_SIZES = (1024, 2048, 4096)
INBOX_QUEUE = "identity"
DEFAULT_AUDIT_TIMEOUT = 30.0


class KeysEndpoints(ServiceBase):
    """key_* methods, the `identity.*` key lookups and the handlers of shared keys and audits."""

    keyring: Keyring
    doc: IdentityDocument | None

    def require_identity(self) -> IdentityDocument:  # pragma: no cover - provided by the service
        raise NotImplementedError

    async def fetch_document(self, user_id: str, refresh: bool = False) -> IdentityDocument:  # pragma: no cover
        raise NotImplementedError

    def master_key(self) -> rsa.RSAPrivateKey:  # pragma: no cover - provided by the service
        raise NotImplementedError

    # ---- lookups ---------------------------------------------------------------------------

    def _full_key_id(self, key_id: Any) -> str:
        """`alias` alone means an own key; anything else must be a well-formed key id."""
        if not isinstance(key_id, str) or not key_id:
            raise InvalidArgumentError("key_id must be a key id (alias$name@host_port)", reason="invalid_key_id")
        if "$" not in key_id:
            return self.require_identity().primary.key_id(ids.check_key_alias(key_id))
        ids.split_key_id(key_id)
        return key_id

    def find_record(self, key_id: Any) -> KeyRecord:
        """A key held here (own, master or shared to us); raises `NotFoundError` (`key_not_found`)."""
        full = self._full_key_id(key_id)
        if self.doc is not None and full == self.doc.primary.key_id():
            record = self.keyring.master_record(self.doc.primary)
            if record is not None:
                return record
        record = self.keyring.get(full)
        if record is None:
            raise NotFoundError(f"key {full} was not found", reason="key_not_found")
        return record

    def private_record(self, key_id: Any) -> KeyRecord:
        """A key whose private half is held here; the master key when `key_id` is None."""
        if key_id is None:
            doc = self.require_identity()
            self.master_key()
            record = self.keyring.master_record(doc.primary)
            assert record is not None
            return record
        record = self.find_record(key_id)
        if record.private is None:
            raise ConflictError(f"only the public half of {record.key_id} is known here", reason="key_not_private")
        if self.doc is not None and record.key_id == self.doc.primary.key_id():
            self.master_key()
        return record

    async def public_record(self, key_id: Any) -> KeyRecord:
        """A key held here, or another node's master key derived from its fetched identity."""
        full = self._full_key_id(key_id)
        try:
            return self.find_record(full)
        except NotFoundError:
            alias, owner = ids.split_key_id(full)
            if alias != ids.MASTER_ALIAS:
                raise
        try:
            doc = await self.fetch_document(owner.url)
        except NotFoundError:
            raise NotFoundError(f"key {full} was not found", reason="key_not_found") from None
        return KeyRecord(key_id=full, public=doc.public_key(), label=full, creator=doc.idurl, created=0.0)

    def all_records(self) -> list[KeyRecord]:
        master = self.keyring.master_record(self.doc.primary) if self.doc is not None else None
        return ([master] if master is not None else []) + self.keyring.all()

    def model_snapshot(self, model_name: str, query_details: Any = None) -> list[tuple[str, Any]] | None:
        if model_name != "key":
            return None
        return [(record.key_id, record.info()) for record in self.all_records()]

    async def _publish_key(self, record: KeyRecord) -> None:
        await self.ctx.bus.publish_model("key", record.key_id, record.info())

    # ---- key API ---------------------------------------------------------------------------

    @endpoint()
    async def keys_list(self, sort: bool = False, include_private: bool = False) -> list[dict[str, Any]]:
        records = self.all_records()
        if as_bool(sort, "sort"):
            records.sort(key=lambda r: r.key_id)
        return [r.info(include_private=as_bool(include_private, "include_private")) for r in records]

    @endpoint()
    async def key_get(self, key_id: str, include_private: bool = False, include_signature: bool = False,
                      generate_signature: bool = False) -> dict[str, Any]:
        record = self.find_record(key_id)
        if as_bool(generate_signature, "generate_signature"):
            master = self.master_key()
            payload = key_signature_payload(record.key_id, record.public_ssh())
            signature = crypto.b64(await asyncio.to_thread(crypto.sign, master, payload))
            if self.keyring.get(record.key_id) is not None:
                record = self.keyring.update(record.key_id, signature=signature)
            else:
                record = replace(record, signature=signature)
        with_signature = as_bool(include_signature, "include_signature") or record.signature != "" and \
            as_bool(generate_signature, "generate_signature")
        info = record.info(include_private=as_bool(include_private, "include_private"),
                           include_signature=with_signature)
        if with_signature and record.signature and self.keyring.master is not None:
            info["signature_pubkey"] = crypto.public_key_to_ssh(self.keyring.master.public_key())
        return info

    @endpoint()
    async def key_create(self, key_alias: str, key_size: Any = None, label: str = "", active: bool = True,
                         include_private: bool = False) -> Reply:
        doc = self.require_identity()
        alias = ids.check_key_alias(key_alias)
        key_id = doc.primary.key_id(alias)
        if alias == ids.MASTER_ALIAS or self.keyring.get(key_id) is not None:
            raise ConflictError(f"key {key_id} already exists", reason="key_exists")
        bits = _key_size(key_size, self.ctx.config.get("personal/private-key-size"))
        private = await asyncio.to_thread(crypto.generate_private_key, bits)
        if self.keyring.get(key_id) is not None:  # created meanwhile by a concurrent call
            raise ConflictError(f"key {key_id} already exists", reason="key_exists")
        record = KeyRecord(key_id=key_id, public=private.public_key(), private=private, label=_text(label, "label"),
                           active=as_bool(active, "active"), creator=doc.idurl)
        self.keyring.put(record)
        await self._publish_key(record)
        return Reply(record.info(include_private=as_bool(include_private, "include_private")),
                     f"new private key {key_id} was generated successfully")

    @endpoint()
    async def key_label(self, key_id: str, label: str) -> Reply:
        record = self.find_record(key_id)
        text = _text(label, "label")
        if self.doc is not None and record.key_id == self.doc.primary.key_id():
            self.keyring.set_master_label(text)
            record = self.keyring.master_record(self.doc.primary) or record
        else:
            record = self.keyring.update(record.key_id, label=text)
        await self._publish_key(record)
        return Reply(record.info(), f"label for the key {record.key_id} updated")

    @endpoint()
    async def key_state(self, key_id: str, active: bool) -> Reply:
        record = self.find_record(key_id)
        state = as_bool(active, "active")
        if self.doc is not None and record.key_id == self.doc.primary.key_id():
            if not state:
                raise ConflictError("the master key cannot be deactivated", reason="master_key_protected")
        else:
            record = self.keyring.update(record.key_id, active=state)
        await self._publish_key(record)
        return Reply(record.info(), f"key {record.key_id} is now {'active' if state else 'inactive'}")

    @endpoint()
    async def key_erase(self, key_id: str) -> Reply:
        full = self._full_key_id(key_id)
        if ids.split_key_id(full)[0] == ids.MASTER_ALIAS and self.doc is not None and \
                full == self.doc.primary.key_id():
            raise ConflictError("the master key cannot be erased", reason="master_key_protected")
        record = self.keyring.remove(full)
        if record is None:
            raise NotFoundError(f"key {full} was not found", reason="key_not_found")
        await self.ctx.bus.publish_model("key", full, record.info(), deleted=True)
        return Reply({"key_id": full}, f"key {full} was erased")

    @endpoint()
    async def key_share(self, key_id: str, trusted_user_id: str, include_private: bool = False,
                        include_signature: bool = False, timeout: Any = 30) -> Reply:
        record = self.find_record(key_id)
        seconds = _timeout(timeout, 30.0)
        recipient = await self._user_document(trusted_user_id)
        try:
            payload = keyshare.build_key_payload(record, recipient.public_key(),
                                                 as_bool(include_private, "include_private"),
                                                 as_bool(include_signature, "include_signature"))
        except ShareError as exc:
            raise ConflictError(str(exc), reason="key_not_private") from None
        reply = await self._send(recipient.idurl, "Key", payload, seconds)
        if reply.get("command") != "Ack":
            raise NodeError(f"{recipient.global_id} refused the key {record.key_id}: {_reason(reply)}",
                            reason="key_share_refused", status=409)
        return Reply({"key_id": record.key_id, "trusted_user_id": recipient.global_id, "idurl": recipient.idurl,
                      "include_private": bool(payload["private"])},
                     f"key {record.key_id} was sent to {recipient.global_id}")

    @endpoint()
    async def key_audit(self, key_id: str, untrusted_user_id: str, is_private: bool = False,
                        timeout: Any = None) -> Reply:
        record = await self.public_record(key_id)
        private = as_bool(is_private, "is_private")
        seconds = _timeout(timeout, DEFAULT_AUDIT_TIMEOUT)
        auditee = await self._user_document(untrusted_user_id)
        challenge = keyshare.new_challenge()
        reply = await self._send(auditee.idurl, "AuditKey",
                                 {"key_id": record.key_id, "is_private": private, "challenge": crypto.b64(challenge)},
                                 seconds)
        passed = reply.get("command") == "Ack" and keyshare.audit_check(
            record.key_id, record.public, challenge, private, reply.get("payload"))
        kind = "private" if private else "public"
        if not passed:
            raise NodeError(f"{auditee.global_id} failed the audit of {kind} key {record.key_id}: {_reason(reply)}",
                            reason="key_audit_failed", status=409)
        return Reply({"key_id": record.key_id, "untrusted_user_id": auditee.global_id, "idurl": auditee.idurl,
                      "is_private": private, "audited": True},
                     f"{auditee.global_id} holds the {kind} key {record.key_id}")

    async def _user_document(self, user_id: Any) -> IdentityDocument:
        if not isinstance(user_id, str):
            raise InvalidArgumentError("user id must be an IDURL, a global id or a key id")
        ids.to_idurl(user_id)  # 400 for malformed ids before any network call
        return await self.fetch_document(user_id)

    async def _send(self, idurl: str, command: str, payload: Any, timeout: float) -> dict[str, Any]:
        kwargs = {"remote_idurl": idurl, "command": command, "payload": payload, "timeout": timeout}
        reply = await self.ctx.bus.call(subjects.internal("transport", "send"), kwargs, timeout=timeout + 5)
        return reply if isinstance(reply, dict) else {}

    # ---- packets from other nodes ----------------------------------------------------------

    async def subscribe_packets(self) -> None:
        self._packet_subs = [
            await self.ctx.bus.nc.subscribe(subjects.inbox("Key"), queue=INBOX_QUEUE, cb=self._on_key_packet),
            await self.ctx.bus.nc.subscribe(subjects.inbox("AuditKey"), queue=INBOX_QUEUE, cb=self._on_audit_packet),
        ]

    async def unsubscribe_packets(self) -> None:
        for sub in getattr(self, "_packet_subs", []):
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - closing anyway
                log.debug("unsubscribe failed: %s", exc)
        self._packet_subs = []

    async def _on_key_packet(self, msg: Any) -> None:
        await self._answer(msg, self.receive_key)

    async def _on_audit_packet(self, msg: Any) -> None:
        await self._answer(msg, self.answer_audit)

    async def _answer(self, msg: Any, handler: Any) -> None:
        try:
            body = codec.loads(msg.data)
            if not isinstance(body, dict):
                raise ShareError("packet body must be an object")
            reply = {"command": "Ack", "payload": await handler(body)}
        except (ShareError, NodeError, ValueError) as exc:
            reply = {"command": "Fail", "payload": {"reason": str(exc)}}
        except Exception:  # noqa: BLE001 - a bad packet must not kill the subscription
            log.exception("handling an incoming packet failed")
            reply = {"command": "Fail", "payload": {"reason": "internal error"}}
        try:
            await msg.respond(codec.dumps(reply))
        except Exception as exc:  # noqa: BLE001 - the transport may have given up
            log.debug("reply to an incoming packet lost: %s", exc)

    async def receive_key(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a key another node shared with us (the `Key` packet)."""
        master = self.master_key()
        sender = str(body.get("creator_idurl") or body.get("owner_idurl") or "")
        record = await asyncio.to_thread(keyshare.open_key_payload, body.get("payload"), master, sender)
        if self.doc is not None and record.key_id == self.doc.primary.key_id():
            raise ShareError("nobody else can give us our own master key")
        await self._check_owner(record.key_id, sender)
        known = self.keyring.get(record.key_id)
        if known is not None:
            if known.public_ssh() != record.public_ssh():
                raise ShareError(f"key {record.key_id} is already known with another public key")
            record = replace(record, private=record.private or known.private,
                             label=known.label or record.label, active=known.active)
        self.keyring.put(record)
        log.info("key %s received from %s (private: %s)", record.key_id, sender, record.private is not None)
        await self._publish_key(record)
        await self.ctx.bus.publish_event("key-registered", {"key_id": record.key_id, "from": sender,
                                                           "is_private": record.private is not None})
        return {"key_id": record.key_id}

    async def _check_owner(self, key_id: str, sender: str) -> None:
        """Only a key's owner (under its IDURL of now or an earlier one) may give it to us, so no peer
        can plant a key under someone else's name."""
        _, owner = ids.split_key_id(key_id)
        if owner.url == sender:
            return
        try:
            doc = await self.fetch_document(sender)
        except NodeError:
            raise ShareError(f"the sender of {key_id} is unknown") from None
        if owner.url not in doc.sources:
            raise ShareError(f"{key_id} belongs to {owner.url}: only its owner can share it")

    async def answer_audit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Prove that we hold the key an `AuditKey` packet asks about."""
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise ShareError("AuditKey payload must be an object")
        record = self.find_record(str(payload.get("key_id") or ""))
        try:
            challenge = crypto.unb64(str(payload.get("challenge") or ""))
        except crypto.CryptoError:
            raise ShareError("challenge must be base64") from None
        return await asyncio.to_thread(keyshare.audit_answer, record, challenge, bool(payload.get("is_private")))


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidArgumentError(f"{name} must be text of at most 256 characters")
    return value


def _key_size(value: Any, default: Any) -> int:
    if value is None or value == "":
        return int(default)
    try:
        bits = int(value) if not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        bits = 0
    if bits not in KEY_SIZES:
        raise InvalidArgumentError(f"key_size must be one of {', '.join(map(str, KEY_SIZES))}")
    return bits


def _timeout(value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError("timeout must be a number of seconds") from None
    if not 0 < seconds <= 600:
        raise InvalidArgumentError("timeout must be between 0 and 600 seconds")
    return seconds


def _reason(reply: dict[str, Any]) -> str:
    payload = reply.get("payload")
    if isinstance(payload, dict) and payload.get("reason"):
        return str(payload["reason"])
    if isinstance(payload, str) and payload:
        return payload[:200]
    return str(reply.get("command") or "no answer")
