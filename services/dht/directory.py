"""What the DHT means to the rest of the node: general values, signed records, nicknames, layers.

`Directory` turns API-level requests into envelopes on a `DhtNode` and back. Signing and key
lookup go through an `IdentityClient` (the identity process over the bus in production, a fake in
tests), so this module has no bus code. One path checks every signature, of a typed record or of a
layer member entry, for readers and for the storing node alike (`_check_signature`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from common import rsa_public
from common.errors import InvalidArgumentError, NodeError, NotFoundError
from services.dht import layers, members, records
from services.dht.node import DhtNode, node_info

log = logging.getLogger(__name__)

KEY_CACHE_TTL = 300.0
CLAIM_WAIT = 2.0
"""Seconds a contested read waits for the nodes it knows before deciding on the copies it has."""
CLAIM_QUORUM = 3
"""Genuine copies a contested read wants before it trusts a count; fewer, and it looks the key up."""
MAX_KEYS = 10_000
"""Owners' public keys kept (records and member entries name them; peers choose the names)."""


class IdentityClient(Protocol):
    """The identity process's verbs the DHT needs."""

    async def sign(self, data: bytes) -> dict[str, Any]:
        """{"signature": b64, "key_id": ...} of `data` by this node's master key."""

    async def my_identity(self) -> dict[str, Any]:
        """{"idurl", "global_id", ...} of this node; raises `NodeError` when there is none."""

    async def fetch(self, idurl: str) -> dict[str, Any]:
        """{"publickey": "ssh-rsa ...", ...} of another identity."""


@dataclass
class ReadOutcome:
    """A verified record, or why none could be returned."""

    data: Any = None
    env: dict[str, Any] | None = None
    error: str = ""
    reason: str = ""
    closest: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.env is not None


class Directory:
    """Values, signed records, nicknames and layer members over one `DhtNode`."""

    def __init__(self, node: DhtNode, identity: IdentityClient):
        self.node = node
        self.identity = identity
        self._keys: dict[str, tuple[float, rsa_public.PublicKey]] = {}
        self._cache: dict[bytes, tuple[float, dict[str, Any]]] = {}
        self.active_layers: set[int] = {layers.DEFAULT}
        self.known_members: dict[int, int] = {}
        self._checked = members.CheckedEntries()

    # --- writing ---------------------------------------------------------------------------

    async def write(self, record_type: str, key: str, value: Any, layer_id: int = 0,
                    expire: int | None = None) -> dict[str, Any]:
        """Write a record; typed ones are signed by this node. Returns the reference `write` reply.

        Raises:
            InvalidArgumentError: bad key, value, type, expiry, or a record this node may not sign.
            UnavailableError / NotFoundError: from the identity process (no identity yet).
        """
        rk = records.kind(record_type)
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError("key must be a non-empty string", reason="invalid_argument")
        lifetime = rk.default_expire if expire in (None, "", 0) else _positive_int(expire, "expire")
        lifetime = min(lifetime, records.MAX_EXPIRE)
        data = records.complete_data(record_type, key, value)
        now = time.time()
        env = records.make_envelope(layer_id, record_type, key, data, now + lifetime, self.node.dht_id, published=now)
        if record_type != records.SKIP_VALIDATION:
            try:
                records.check_schema(record_type, data)
            except records.RecordError as err:
                raise InvalidArgumentError(str(err), reason=err.reason) from None
            me = await self.identity.my_identity()
            signers = records.allowed_signers(record_type, data)
            if me.get("idurl") not in signers:
                raise InvalidArgumentError(
                    f"this node ({me.get('idurl')}) may not sign a {record_type} record owned by "
                    f"{', '.join(signers) or 'nobody'}", reason="not_record_owner")
            env = await self._signed(env, str(me["idurl"]))
        accepted, kept_here = await self.node.publish(env, renew_seconds=lifetime if rk.renew else None)
        self.active_layers.add(layer_id)
        closest = accepted or self.node.closest_known(records.storage_key(layer_id, record_type, key))
        return {
            "write": "success" if accepted or kept_here else "failed",
            "my_dht_id": self.node.dht_id,
            "key": key,
            "value": data,
            "closest_nodes": [node_info(n) for n in closest],
        }

    async def _signed(self, env: dict[str, Any], signer: str) -> dict[str, Any]:
        """`env` with `signer`'s signature over its place, data and times (`records.record_signed_bytes`)."""
        env = {name: value for name, value in env.items() if name != "signature"}
        signed = await self.identity.sign(records.record_signed_bytes(env))
        env["signature"] = {"signer": signer, "key_id": str(signed.get("key_id") or ""),
                            "value": str(signed["signature"])}
        return env

    async def renewed(self, env: dict[str, Any], lifetime: float) -> dict[str, Any] | None:
        """One of our records published again now for `lifetime` seconds, signed again if it was signed.

        None when it cannot be signed now (no identity yet, the identity process is down): the
        copies already stored stay valid until they expire, and the next round tries again.
        """
        now = time.time()
        fresh = dict(env, published=now, expire_at=now + lifetime)
        if not env.get("signature"):
            return fresh
        try:
            return await self._signed(fresh, str(env["signature"]["signer"]))
        except NodeError as err:
            log.warning("cannot sign our %s record %r again: %s", env["record_type"], env["key"], err.message)
            return None

    # --- reading ---------------------------------------------------------------------------

    async def read(self, record_type: str, key: str, layer_id: int = 0,
                   use_cache_ttl: float | None = None) -> ReadOutcome:
        """Find a record and verify it; a forged or malformed record is never returned as valid."""
        rk = records.kind(record_type)
        dkey = records.storage_key(layer_id, record_type, key)
        self.active_layers.add(layer_id)
        if use_cache_ttl:
            cached = self._cache.get(dkey)
            if cached and time.monotonic() - cached[0] < float(use_cache_ttl) and cached[1]["expire_at"] > time.time():
                return ReadOutcome(data=cached[1]["data"], env=cached[1])
        failure = ReadOutcome()
        if rk.contested:
            outcome = await self._most_held(dkey, record_type, key, layer_id, failure)
        else:
            outcome = await self._newest_valid(dkey, record_type, key, layer_id, failure)
        if outcome is None:
            if not failure.closest:
                failure.closest = [node_info(n) for n in self.node.closest_known(dkey)]
            return failure
        self._cache[dkey] = (time.monotonic(), outcome.env or {})
        return outcome

    async def _newest_valid(self, dkey: bytes, record_type: str, key: str, layer_id: int,
                            failure: ReadOutcome) -> ReadOutcome | None:
        """The local copy if it is genuine, else the newest genuine copy a lookup finds.

        For keys only their owner may sign (an identity, a suppliers list): every genuine copy is
        the owner's, and the newest is the owner's latest word.
        """
        candidates: list[dict[str, Any]] = []
        local = self.node.get_local(dkey)
        if local is not None:
            candidates.append(local)
        outcome = await self._first_valid(candidates, record_type, key, layer_id, failure)
        if outcome is None:
            found = await self.node.get_remote(dkey)
            failure.closest = [node_info(n) for n in found.closest]
            remote = [e for e in found.values if e not in candidates]
            outcome = await self._first_valid(remote, record_type, key, layer_id, failure)
        return outcome

    async def _most_held(self, dkey: bytes, record_type: str, key: str, layer_id: int,
                         failure: ReadOutcome) -> ReadOutcome | None:
        """Of a key any user may claim (a nickname position), the claim most storing nodes hold.

        A storing node keeps the first claim it meets and refuses another signer's
        (`records.may_replace`), so the first claimant holds the key at every node that took its
        write; a later squatter gets only the nodes that held no copy (one that missed the write,
        its own). So the reader counts genuine copies by signer (`records.Claims`): its own and
        those of the closest nodes it knows, asked at once, until the answers still due cannot
        change the leader (a dead contact delays nothing once the others agree). With fewer than
        `CLAIM_QUORUM` copies that way (a large network, where the nodes we know are not the
        holders), it looks the key up across the network and counts every holder's copy; with none,
        one value lookup says whether anybody holds one (a miss costs what it costs for any record).
        Outvoting the first claimant takes owning most of the nodes closest to the key.
        """
        failure.closest = [node_info(n) for n in self.node.closest_known(dkey)]
        claims = records.Claims()
        checked: dict[str, bool] = {}
        local = self.node.get_local(dkey)
        if local is not None:
            await self._count_claim(claims, checked, local, record_type, key, layer_id, failure)
        asks = self.node.ask_known(dkey)
        unanswered = len(asks)
        try:
            for answer in asyncio.as_completed(asks, timeout=CLAIM_WAIT):
                env = await answer
                unanswered -= 1
                if env is not None:
                    await self._count_claim(claims, checked, env, record_type, key, layer_id, failure)
                if claims.copies >= CLAIM_QUORUM and claims.decided(unanswered):
                    break
                if claims.copies + unanswered < CLAIM_QUORUM:
                    break  # too few copies whatever the rest say: look the key up now
        except TimeoutError:
            pass
        if claims.copies < CLAIM_QUORUM:
            if not claims.copies and not (await self.node.get_remote(dkey)).values:
                return None  # nobody holds one: a miss costs one lookup, as for any record
            claims = records.Claims()
            for env in await self.node.collect(dkey):
                await self._count_claim(claims, checked, env, record_type, key, layer_id, failure)
        if len(claims.held) > 1:
            log.info("%s record %r is claimed by %d signers: %s", record_type, key, len(claims.held),
                     dict(claims.held))
        chosen = claims.chosen()
        return None if chosen is None else ReadOutcome(data=chosen["data"], env=chosen)

    async def _count_claim(self, claims: records.Claims, checked: dict[str, bool], env: dict[str, Any],
                           record_type: str, key: str, layer_id: int, failure: ReadOutcome) -> None:
        """Count `env` in `claims` if it is genuine (each distinct copy is verified once)."""
        text = records.canonical(env)
        if text not in checked:
            checked[text] = await self._first_valid([env], record_type, key, layer_id, failure) is not None
        if checked[text]:
            claims.add(env)

    async def _first_valid(self, candidates: list[dict[str, Any]], record_type: str, key: str, layer_id: int,
                           failure: ReadOutcome) -> ReadOutcome | None:
        for env in candidates:
            try:
                await self.verify(env, record_type, key, layer_id)
            except records.RecordError as err:
                log.info("rejected %s record %r: %s", record_type, key, err)
                failure.error, failure.reason = str(err), err.reason
                continue
            return ReadOutcome(data=env["data"], env=env)
        return None

    async def verify_envelope(self, env: dict[str, Any]) -> dict[str, Any]:
        """What this node may keep of an envelope a peer asks it to store, at the place it names.

        A typed record is kept whole if its owner signed it; a member bucket keeps only the entries
        their members signed (`members.MAX_STORE_CHECKS` new ones checked at most).

        Raises:
            RecordError: a forged or malformed record, or a bucket without one genuine entry.
        """
        if env["record_type"] != records.LAYER_MEMBERS:
            await self.verify(env, env["record_type"], env["key"], env["layer_id"])
            return env
        found = members.entries(env)
        if not found:
            raise records.RecordError("the member bucket holds no live entry", "malformed_record")
        genuine = await self._genuine_entries(env["layer_id"], found, members.MAX_STORE_CHECKS)
        if not genuine:
            raise records.RecordError("no member entry is signed by its member", "invalid_signature")
        return members.with_entries(env, genuine)

    async def verify(self, env: dict[str, Any], record_type: str, key: str, layer_id: int) -> None:
        """Raise `RecordError` unless `env` is a genuine record of this type at this key."""
        records.check_envelope_place(env, layer_id, record_type, key)
        if record_type == records.SKIP_VALIDATION:
            return
        data = env["data"]
        records.check_schema(record_type, data)
        if data.get("key") != key:
            raise records.RecordError("record names another key", "record_mismatch")
        sig = env.get("signature")
        if not sig:
            raise records.RecordError(f"{record_type} record is not signed", "invalid_signature")
        if sig["signer"] not in records.allowed_signers(record_type, data):
            raise records.RecordError(f"record is signed by {sig['signer']}, not by its owner", "invalid_signature")
        records.check_lifetime(env)
        await self._check_signature(sig["signer"], records.record_signed_bytes(env), sig["value"])

    async def _check_signature(self, signer: str, payload: bytes, signature: str) -> None:
        """Raise `RecordError` unless `signature` (base64) over `payload` was made by `signer`'s key."""
        public_key = await self._public_key(signer)
        try:
            raw_signature = rsa_public.unb64(signature)
        except rsa_public.CryptoError:
            raise records.RecordError("record signature is not base64", "invalid_signature") from None
        # On the loop: Python's pow holds the GIL, so a worker thread would stall the loop just the
        # same (at most about 0.7 ms, for a 4096-bit key; `rsa_public` bounds the keys it accepts).
        # Each check gets a turn of its own, so a read checking many entries lets other work in between.
        await asyncio.sleep(0)
        if not rsa_public.verify(public_key, payload, raw_signature):
            raise records.RecordError("record signature does not match its owner's key", "invalid_signature")

    async def _genuine_entries(self, layer_id: int, found: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
        """The entries of `found` signed by their member.

        Verdicts are remembered (`members.CheckedEntries`); of the entries not seen before, only the
        first `limit` are checked and the rest are left out, which bounds what one request costs.
        """
        now = time.time()
        keyed = [(members.digest(layer_id, entry), entry) for entry in found]
        verdicts: dict[bytes, bool] = {}
        unchecked: dict[bytes, dict[str, Any]] = {}
        for key, entry in keyed:
            if key in verdicts or key in unchecked:
                continue
            known = self._checked.get(key, now)
            if known is not None:
                verdicts[key] = known
            elif len(unchecked) < limit:
                unchecked[key] = entry
        gate = asyncio.Semaphore(members.CHECK_CONCURRENCY)

        async def check(key: bytes, entry: dict[str, Any]) -> None:
            async with gate:
                try:
                    await self._check_signature(entry["idurl"], members.signed_bytes(layer_id, entry),
                                                entry["signature"])
                    verdicts[key] = True
                except records.RecordError as err:
                    log.info("dropped a member entry of %s on layer %d: %s", entry["idurl"], layer_id, err)
                    verdicts[key] = False
            until = members.effective_expiry(entry) if verdicts[key] else now + members.FAILED_CHECK_TTL
            self._checked.put(key, verdicts[key], until)

        await asyncio.gather(*(check(key, entry) for key, entry in unchecked.items()))
        return [entry for key, entry in keyed if verdicts.get(key)]

    async def _public_key(self, idurl: str) -> rsa_public.PublicKey:
        cached = self._keys.get(idurl)
        if cached and time.monotonic() - cached[0] < KEY_CACHE_TTL:
            return cached[1]
        try:
            doc = await self.identity.fetch(idurl)
            key = rsa_public.load_public_key(str(doc.get("publickey") or ""))
        except NodeError as err:
            raise records.RecordError(f"owner identity {idurl} is not available: {err.message}",
                                      "owner_unknown") from None
        except rsa_public.CryptoError:
            raise records.RecordError(f"owner identity {idurl} has no valid public key", "owner_unknown") from None
        self._keys.pop(idurl, None)
        self._keys[idurl] = (time.monotonic(), key)
        while len(self._keys) > MAX_KEYS:
            del self._keys[next(iter(self._keys))]  # the least recently fetched
        return key

    # --- nicknames -------------------------------------------------------------------------

    async def publish_nickname(self, nickname: str, idurl: str) -> dict[str, Any]:
        """Take the first free position of `nickname` (or the one we hold already) and sign it."""
        records.check_nickname(nickname)
        position = 0
        for position in range(records.MAX_NICKNAME_POSITIONS):
            found = await self.read("nickname", records.nickname_key(nickname, position))
            if not found.ok or found.data.get("idurl") == idurl:
                break
        else:
            raise NodeError(f"all positions of nickname {nickname} are taken", reason="nickname_taken", status=409)
        key = records.nickname_key(nickname, position)
        reply = await self.write("nickname", key, records.nickname_data(nickname, position, idurl))
        reply["position"] = position
        return reply

    async def search_nickname(self, nickname: str, attempts: int = 1) -> dict[str, Any]:
        """The first user registered under `nickname` (reference `user_search` shape)."""
        records.check_nickname(nickname)
        for _ in range(max(1, attempts)):
            found = await self.read("nickname", records.nickname_key(nickname, 0))
            if found.ok:
                return _user_found(nickname, found.data)
        return {"result": "not exist", "nickname": nickname, "idurl": "", "global_id": "", "position": -1}

    async def observe_nickname(self, nickname: str, attempts: int = 3) -> list[dict[str, Any]]:
        """Every user registered under `nickname`, reading positions until a free one."""
        records.check_nickname(nickname)
        users = []
        for position in range(records.MAX_NICKNAME_POSITIONS):
            found = None
            for _ in range(max(1, attempts)):
                found = await self.read("nickname", records.nickname_key(nickname, position))
                if found.ok:
                    break
            if found is None or not found.ok:
                break
            users.append(_user_found(nickname, found.data))
        return users

    # --- layers ----------------------------------------------------------------------------

    async def announce(self, layer_id: int, idurl: str) -> bool:
        """Add this node, signed by its identity, to its bucket of a layer; True when some node (or this one) took it.

        False too when the identity process cannot sign now: the connector announces again later.
        """
        address = f"{self.node.address[0]}:{self.node.address[1]}" if self.node.address else ""
        entry = members.new_entry(idurl, self.node.dht_id, address, int(time.time()), int(layers.MEMBER_TTL))
        try:
            signed = await self.identity.sign(members.signed_bytes(layer_id, entry))
        except NodeError as err:
            log.warning("cannot sign the announcement on layer %d: %s", layer_id, err.message)
            return False
        entry["signature"] = str(signed["signature"])
        self._checked.put(members.digest(layer_id, entry), True, members.effective_expiry(entry))
        env = members.bucket_envelope(layer_id, members.bucket_of(idurl), [entry], self.node.dht_id)
        accepted, kept_here = await self.node.publish(env)
        return bool(accepted) or (kept_here and not self.node.contacts())

    async def members(self, layer_id: int) -> dict[str, dict[str, Any]]:
        """Live members of a layer, by IDURL: entries their members signed, from every bucket's closest nodes.

        A storing node may be hostile, so every entry read is checked here too. Entries held by more
        nodes are checked first: forgeries planted on a few nodes cannot crowd genuine entries out of
        the `members.MAX_READ_CHECKS` new checks one read may make.
        """
        now = time.time()
        copies = await asyncio.gather(*(self.node.collect(members.bucket_dkey(layer_id, bucket))
                                        for bucket in range(members.MEMBER_BUCKETS)))
        seen: Counter[bytes] = Counter()
        by_digest: dict[bytes, dict[str, Any]] = {}
        for bucket, envs in enumerate(copies):
            for env in envs:
                try:
                    records.check_envelope_place(env, layer_id, records.LAYER_MEMBERS, members.bucket_key(bucket))
                    found = members.entries(env, now)
                except records.RecordError:
                    continue
                for entry in found:
                    key = members.digest(layer_id, entry)
                    seen[key] += 1
                    by_digest[key] = entry
        ranked = [by_digest[key] for key, _ in seen.most_common()]
        genuine = members.newest(await self._genuine_entries(layer_id, ranked, members.MAX_READ_CHECKS))
        self.known_members[layer_id] = len(genuine)
        self.active_layers.add(layer_id)
        return genuine

    async def random_users(self, layer_id: int, count: int, exclude: str = "") -> list[str]:
        """Up to `count` random live users announced on a layer (not this node), those seen answering first.

        Raises:
            NotFoundError: nobody else is announced there (reason `users_not_found`).
        """
        live = await self.members(layer_id)
        found = [idurl for idurl in live if idurl != exclude]
        if not found:
            raise NotFoundError("no users were found", reason="users_not_found")
        random.shuffle(found)
        # Members whose DHT node answered our ping first (a stable sort keeps the shuffle within each group).
        found.sort(key=lambda idurl: self.node.proto.standing.answered_at(live[idurl]["dht_id"]) is None)
        return found[:max(1, count)]


def _user_found(nickname: str, data: dict[str, Any]) -> dict[str, Any]:
    idurl = str(data.get("idurl") or "")
    return {"result": "exist", "nickname": nickname, "idurl": idurl,
            "global_id": records.global_id_from_idurl(idurl), "position": str(data.get("position", "0"))}


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a positive number of seconds", reason="invalid_argument") from None
    if number <= 0 or isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be a positive number of seconds", reason="invalid_argument")
    return number
