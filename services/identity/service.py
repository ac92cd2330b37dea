"""The identity process's bus endpoints: the node's identity, the keyring agent, the ID server.

Identity API methods and the internal verbs other processes call (`identity.sign`,
`identity.fetch`, …) live here; the key API methods and the `Key`/`AuditKey` packet handlers are
in `keys_endpoints.py`. Domain rules are in the pure modules (`document`, `keyring`, `idcache`,
`idstore`, `keyshare`); this module decodes, orchestrates, encodes and emits events.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import crypto, network_config
from common.endpoint import Reply, endpoint
from common.errors import ConflictError, InvalidArgumentError, NodeError, NotFoundError
from common.fsutil import atomic_write
from common.process import ProcessContext
from common.values import as_bool
from common import ids
from services.identity import document
from services.identity.document import DocumentError, IdentityDocument
from services.identity import peer_pins
from services.identity.idcache import CacheConflictError, IdentityCache, UnconfirmedError
from services.identity.idclient import IdServerClient
from services.identity.idstore import IdServerStore
from services.identity.keyring import Keyring
from services.identity.keys_endpoints import KeysEndpoints
from services.identity.local_identity import LocalIdentity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from services.identity.idserver import IdServer

log = logging.getLogger(__name__)

CACHE_TTL = 600.0
"""Seconds a cached identity of another node is used before it is fetched again."""
NICKNAME_ATTEMPTS = 5
NICKNAME_FIRST_DELAY = 1.0
IDSERVER_OPTIONS = "services/identity-server/"
ANY_ADDRESS = ("0.0.0.0", "::", "*")
STUN_TIMEOUT = 5.0
RELAY_ASK_TIMEOUT = 2.0
"""The transport answers at once; it may be down (restarting), and then the direct address is used."""
CONTACT_OPTIONS = ("services/tcp-connections/", "services/network/selected", "services/entangled-dht/known-nodes")
TAKEOVER_CHECK_INTERVAL = 120.0
"""Seconds between checks that no other node took our identity over (a nudge checks at once)."""
TAKEOVER_MIN_INTERVAL = 5.0
"""A nudge from outside costs at most one look at our identity servers per this many seconds."""
AUTO_ROTATE_AFTER = 3
"""Consecutive failed looks at our primary identity server before an automatic rotation."""
DERIVED_PURPOSES = ("ledger-wallet",)
"""What `derive_secret` derives secrets for: each purpose its own, none other."""
INLINE_SEAL_LIMIT = 64 * 1024
"""Bytes `seal` encrypts on the event loop (tens of µs); larger messages go to a thread."""


class IdentityService(KeysEndpoints):
    """The identity process: owns the private keys, the identity, the cache and the ID server."""

    def __init__(self, ctx: ProcessContext, client: IdServerClient | None = None):
        super().__init__(ctx)
        state = ctx.home.state("identity")
        self.keyring = Keyring(state / "keys")
        self.cache = IdentityCache(state / "idcache")
        self.local = LocalIdentity(state / "identity.xml")
        self.idserver_root = state / "idserver"
        self.client = client or IdServerClient()
        self.doc: IdentityDocument | None = None
        self.idserver: IdServer | None = None
        self._inflight: dict[str, asyncio.Future[IdentityDocument]] = {}
        # create/recover/rotate/erase change the identity: one at a time.
        self._identity_lock = asyncio.Lock()
        self._takeover_checked = float("-inf")
        self._takeover_recheck: asyncio.Task[Any] | None = None
        self._primary_failures = 0

    # ---- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.keyring.load()
        self.cache.load()
        self.doc = self.local.load()
        if self.doc is not None and not self._master_matches(self.doc):
            log.error("the master key does not match the local identity; signing is refused")
        await self._reconcile_idserver()
        await self.subscribe_packets()
        if self.doc is not None:
            self._publish_nickname(self.doc)
        self.ctx.bus.spawn(self._first_takeover_check())
        self.ctx.bus.spawn(self._watch_takeover())
        self.ctx.bus.spawn(self._watch_pins())

    async def _first_takeover_check(self) -> None:
        try:
            await self.check_takeover()
            await self.refresh_contacts()
        except NodeError as exc:
            log.info("identity check failed: %s", exc)

    async def _watch_pins(self) -> None:
        """Keep the peers we have contracts or friendships with out of the cache's eviction."""
        await asyncio.sleep(peer_pins.FIRST_REFRESH_DELAY)
        while True:
            await peer_pins.refresh(self.cache, self.ctx.bus)
            await asyncio.sleep(peer_pins.REFRESH_INTERVAL)

    async def stop(self) -> None:
        await self.unsubscribe_packets()
        if self.idserver is not None:
            await self.idserver.stop()
            self.idserver = None
        await self.client.close()

    async def on_config_changed(self, keys: list[str]) -> None:
        if not keys or any(key.startswith(IDSERVER_OPTIONS) for key in keys):
            await self._reconcile_idserver()
        if not keys or any(key.startswith(CONTACT_OPTIONS) for key in keys):
            self.ctx.bus.spawn(self._refresh_contacts_safely())

    async def _refresh_contacts_safely(self) -> None:
        try:
            await self.refresh_contacts()
        except NodeError as exc:
            log.warning("our new address could not be published: %s", exc)

    async def _reconcile_idserver(self) -> None:
        """Run the identity server exactly when and where the options say."""
        config = self.ctx.config
        enabled = bool(config.get(IDSERVER_OPTIONS + "enabled"))
        port = int(config.get(IDSERVER_OPTIONS + "web-port"))
        hosts = {f"{config.get(IDSERVER_OPTIONS + 'host') or '127.0.0.1'}:{port}",
                 f"127.0.0.1:{port}", f"localhost:{port}"}
        current = self.idserver
        bind = str(config.get(IDSERVER_OPTIONS + "listen-host") or "0.0.0.0")
        if current is not None and (not enabled or current.port != port or current.store.hosts != hosts
                                    or current.bind != bind):
            await current.stop()
            self.idserver = None
        if enabled and self.idserver is None:
            from services.identity.idserver import IdServer

            server = IdServer(IdServerStore(self.idserver_root, hosts), port, bind)
            try:
                await server.start()
            except OSError as exc:
                log.error("identity server cannot listen on port %d: %s", port, exc)
                return
            self.idserver = server

    # ---- helpers shared with the key endpoints ---------------------------------------------

    def require_identity(self) -> IdentityDocument:
        if self.doc is None and self.local.taken_over() is not None:
            raise NotFoundError("this node stopped using its identity: another node took it over",
                                reason="identity_taken_over")
        if self.doc is None:
            raise NotFoundError("local identity is not valid or not exist", reason="identity_not_exist")
        return self.doc

    def _master_matches(self, doc: IdentityDocument) -> bool:
        master = self.keyring.master
        return master is not None and crypto.public_key_to_ssh(master.public_key()) == doc.publickey

    def master_key(self) -> rsa.RSAPrivateKey:
        doc = self.require_identity()
        if not self._master_matches(doc):
            raise ConflictError("the master key does not match the local identity", reason="master_key_mismatch")
        assert self.keyring.master is not None
        return self.keyring.master


    def _forget_inflight(self, url: str, _task: object) -> None:
        self._inflight.pop(url, None)
    async def fetch_document(self, user_id: str, refresh: bool = False) -> IdentityDocument:
        """The verified identity of a user (IDURL, global id or key id), from cache or its server.

        A cached copy younger than `CACHE_TTL` is used unless `refresh`; an older one is refreshed
        but still served when its server cannot be reached. Concurrent fetches of one IDURL share
        a single download.
        """
        try:
            user = ids.to_idurl(user_id)
        except InvalidArgumentError:
            raise NotFoundError(f"identity {user_id!r} was not found: not an IDURL or a global id",
                                reason="identity_not_found") from None
        url = user.url
        if self.doc is not None and url in self.doc.sources:
            return self.doc
        cached = self.cache.get(url)
        if cached is not None and not refresh and self.cache.age(url) < CACHE_TTL:
            return cached
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.ensure_future(self._download_and_cache(url, user.name))
            self._inflight[url] = task
            task.add_done_callback(functools.partial(self._forget_inflight, url))
        try:
            return await asyncio.shield(task)
        except NotFoundError:
            if cached is not None and not refresh:
                log.info("identity server of %s unreachable, serving the cached copy", url)
                return cached
            raise

    async def _download_and_cache(self, url: str, name: str) -> IdentityDocument:
        """Fetch `url`, confirm the other sources the document claims, cache what is confirmed.

        Anyone can list anyone's IDURL among its sources: one counts only when its own server serves
        a document with the same key (or the cache holds that key for it already), see `idcache`.
        """
        doc = await self._download_verified(url)
        served = {url}
        if url not in doc.sources:
            if doc.name != name:
                raise NotFoundError(f"{url} serves the identity of another name", reason="identity_not_found")
            # The node moved to another server and told the old one: follow it once.
            try:
                newer = await self._download_verified(doc.idurl)
                if newer.publickey == doc.publickey and newer.revision >= doc.revision:
                    doc = newer
                    served.add(newer.idurl)
            except NotFoundError:
                pass
        unconfirmed = self.cache.unconfirmed(doc, served)
        if unconfirmed:
            served |= await self._serving_key(unconfirmed, doc.publickey)
        try:
            return self.cache.put(doc, requested=url, served=served)
        except (CacheConflictError, UnconfirmedError) as exc:
            raise NotFoundError(str(exc), reason="identity_not_found") from None

    async def _serving_key(self, idurls: list[str], publickey: str) -> set[str]:
        """Those of `idurls` whose own identity server serves a valid document signed by `publickey`."""
        async def serves(idurl: str) -> bool:
            try:
                return (await self._download_verified(idurl)).publickey == publickey
            except NodeError:
                return False

        answers = await asyncio.gather(*(serves(idurl) for idurl in idurls))
        return {idurl for idurl, same in zip(idurls, answers, strict=True) if same}

    async def _download_verified(self, url: str) -> IdentityDocument:
        raw = await self.client.download(url)
        try:
            return document.parse_verified(raw)
        except DocumentError as exc:
            raise NotFoundError(f"identity at {url} cannot be verified: {exc}", reason="identity_not_found") from None

    # ---- internal verbs --------------------------------------------------------------------

    @endpoint("my_identity", internal=True)
    async def my_identity(self) -> dict[str, Any]:
        """This node's identity: idurl, global_id, name, contacts, publickey, revision, sources."""
        return self.require_identity().summary()

    @endpoint("fetch", internal=True)
    async def fetch(self, idurl: str, refresh: bool = False) -> dict[str, Any]:
        """Any node's verified identity, cached; raises `NotFoundError` (`identity_not_found`)."""
        return (await self.fetch_document(idurl, refresh=as_bool(refresh, "refresh"))).summary()

    @endpoint("cache_stats", internal=True)
    async def cache_stats(self) -> dict[str, Any]:
        """Identities cached and pinned (contracts, friends), and sources ignored because their own
        servers did not confirm them (see `idcache`)."""
        return self.cache.stats()

    @endpoint("sign", internal=True)
    async def sign(self, data: str, key_id: str | None = None) -> dict[str, Any]:
        """RSA-PSS/SHA-256 signature of base64 `data` by a key held here (the master key by default)."""
        raw = _unb64(data, "data")
        record = self.private_record(key_id)
        assert record.private is not None
        signature = await asyncio.to_thread(crypto.sign, record.private, raw)
        return {"signature": crypto.b64(signature), "key_id": record.key_id}

    @endpoint("derive_secret", internal=True)
    async def derive_secret(self, purpose: str) -> dict[str, Any]:
        """32 bytes (hex) derived from the master private key for `purpose` (HMAC-SHA256).

        The same identity, recovered anywhere, derives the same bytes: the ledger makes its wallet
        key from them, so `identity_recover` restores the wallet while the master key stays here.
        """
        if purpose not in DERIVED_PURPOSES:
            raise InvalidArgumentError(f"no secret is derived for {purpose!r}", reason="invalid_argument")
        record = self.private_record(None)
        assert record.private is not None
        secret = record.private.private_numbers().d.to_bytes(512, "big")
        return {"secret": hmac.new(secret, f"bitdust/{purpose}".encode(), hashlib.sha256).hexdigest()}

    @endpoint("verify", internal=True)
    async def verify(self, data: str, signature: str, idurl: str) -> bool:
        """True when `signature` over `data` was made by the master key of `idurl`."""
        raw = _unb64(data, "data")
        try:
            sig = crypto.unb64(signature)
        except crypto.CryptoError:
            return False
        doc = await self.fetch_document(idurl)
        return await asyncio.to_thread(crypto.verify, doc.public_key(), raw, sig)

    @endpoint("public_key", internal=True)
    async def public_key(self, key_id: str) -> dict[str, Any]:
        """The public half of a key we hold or were given, or of another node's master key."""
        record = await self.public_record(key_id)
        return {"key_id": record.key_id, "public": record.public_ssh()}

    @endpoint("unwrap", internal=True)
    async def unwrap(self, key_id: str, data: str) -> dict[str, Any]:
        """RSA-OAEP unwrap of a session key with a private key held here."""
        record = self.private_record(key_id)
        assert record.private is not None
        try:
            plain = await asyncio.to_thread(crypto.unwrap_key, record.private, _unb64(data, "data"))
        except crypto.CryptoError:
            raise InvalidArgumentError(f"data cannot be unwrapped with {record.key_id}",
                                       reason="unwrap_failed") from None
        return {"data": crypto.b64(plain)}

    @endpoint("seal", internal=True)
    async def seal(self, public_key: str, data: str, aad: str) -> dict[str, Any]:
        """Base64 `data` sealed for the holder of `public_key` (`crypto.seal`), `aad` bound to it.

        Messages are sealed and opened here, so the messaging process loads no cipher at all.
        """
        try:
            key = crypto.load_public_key(public_key)
        except crypto.CryptoError:
            raise InvalidArgumentError("public_key is not a valid RSA public key", reason="invalid_key") from None
        plain, bound = _unb64(data, "data"), _unb64(aad, "aad")
        if len(plain) > INLINE_SEAL_LIMIT:
            wrapped, body = await asyncio.to_thread(crypto.seal, key, plain, bound)
        else:  # a public-key operation and a short cipher pass: cheaper than the hop to a thread
            wrapped, body = crypto.seal(key, plain, bound)
        return {"key": crypto.b64(wrapped), "body": crypto.b64(body)}

    @endpoint("open", internal=True)
    async def open_sealed(self, key: str, body: str, aad: str, key_id: str | None = None) -> dict[str, Any]:
        """The plaintext of what `seal` made for a private key held here (the master key by default);
        400 `undecryptable` when it was made for another key or altered."""
        record = self.private_record(key_id)
        assert record.private is not None
        parts = (_unb64(key, "key"), _unb64(body, "body"), _unb64(aad, "aad"))
        try:
            plain = await asyncio.to_thread(crypto.open_sealed, record.private, *parts)
        except crypto.CryptoError:
            raise InvalidArgumentError(f"it does not open with {record.key_id}", reason="undecryptable") from None
        return {"data": crypto.b64(plain)}

    # ---- identity API ----------------------------------------------------------------------

    @endpoint()
    async def identity_get(self, include_xml_source: bool = False) -> dict[str, Any]:
        doc = self.require_identity()
        info = doc.reference_info()
        if as_bool(include_xml_source, "include_xml_source"):
            info["xml"] = doc.to_xml()
        return info

    @endpoint()
    async def identity_create(self, username: str, preferred_servers: Any = None,
                              join_network: bool = False) -> Reply:
        async with self._identity_lock:
            if self.doc is not None:
                raise ConflictError("local identity already exist", reason="identity_exists")
            name = ids.check_username(username)
            servers = self._identity_servers(preferred_servers)
            key = self.keyring.master
            if key is None:
                bits = int(self.ctx.config.get("personal/private-key-size"))
                key = await asyncio.to_thread(crypto.generate_private_key, bits)
                # Kept even if the upload fails: a retry must present the same key to servers
                # that already accepted the name.
                self.keyring.set_master(key)
            try:
                doc = document.new_document([ids.server_url(s, name) for s in servers], await self._contacts(), key)
            except DocumentError as exc:
                raise InvalidArgumentError(str(exc)) from None
            for server in servers:
                await self.client.upload(server, doc.to_xml())
            self.local.forget_takeover()
            self._set_identity(doc)
        await self.ctx.bus.publish_event("local-identity-created",
                                         {"idurl": doc.idurl, "global_id": doc.global_id,
                                          "join_network": bool(join_network)})
        await self._identity_written(doc)
        return Reply(doc.reference_info(), f"new identity {doc.global_id} created")

    @endpoint()
    async def identity_backup(self, destination_filepath: str) -> Reply:
        doc = self.require_identity()
        key = self.master_key()
        if not isinstance(destination_filepath, str) or not destination_filepath.strip():
            raise InvalidArgumentError("destination_filepath must be a file path")
        path = _expand(destination_filepath)
        text = doc.idurl + "\n" + crypto.private_key_to_pem(key).decode()
        try:
            await asyncio.to_thread(atomic_write, path, text, 0o600)
        except OSError as exc:
            raise InvalidArgumentError(f"cannot write {path}: {exc.strerror}", reason="invalid_path") from None
        return Reply({"destination_filepath": str(path), "idurl": doc.idurl},
                     f"identity {doc.global_id} and its private key were saved to {path}")

    @endpoint()
    async def identity_recover(self, private_key_source: str, known_idurl: str | None = None,
                               join_network: bool = False) -> Reply:
        """Take an identity over on this node: same key and IDURL, our contacts, revision up.

        The published document then points to this node; the node that used the identity before
        sees the newer revision at its identity servers (when nudged, or on its own check) and stops.
        """
        idurl, key = await asyncio.to_thread(_read_backup, private_key_source)
        idurl = known_idurl or idurl
        if not idurl:
            raise InvalidArgumentError("the backup names no IDURL; pass known_idurl", reason="idurl_missing")
        async with self._identity_lock:
            if self.doc is not None:
                raise ConflictError("local identity already exist", reason="identity_exists")
            found = await self.fetch_document(idurl, refresh=True)
            if found.publickey != crypto.public_key_to_ssh(key.public_key()):
                raise InvalidArgumentError(f"the private key does not belong to {found.idurl}", reason="key_mismatch")
            try:
                doc = document.new_document(list(found.sources), await self._contacts(), key,
                                             revision=found.revision + 1)
            except DocumentError as exc:
                raise InvalidArgumentError(str(exc)) from None
            await self._upload_everywhere(doc, required=True)
            self.keyring.set_master(key)
            self.cache.remove(doc.idurl)
            self.local.forget_takeover()
            self._set_identity(doc)
        await self.ctx.bus.publish_event("local-identity-recovered",
                                         {"idurl": doc.idurl, "global_id": doc.global_id, "revision": doc.revision,
                                          "old_contacts": list(found.contacts), "join_network": bool(join_network)})
        await self._identity_written(doc)
        return Reply(dict(doc.reference_info(), old_contacts=list(found.contacts)),
                     f"identity {doc.global_id} recovered and taken over by this node")

    async def _upload_everywhere(self, doc: IdentityDocument, required: bool) -> None:
        """Publish `doc` at each of its sources; with `required`, at least one must take it."""
        taken, last_error = 0, None
        for source in doc.sources:
            server = ids.parse_idurl(source).server
            try:
                await self.client.upload(server, doc.to_xml())
                taken += 1
            except NodeError as exc:
                log.warning("identity server %s did not take revision %d: %s", server, doc.revision, exc)
                last_error = exc
        if required and not taken and last_error is not None:
            raise last_error

    @endpoint("check_takeover", internal=True)
    async def check_takeover(self) -> dict[str, Any]:
        """Has another node taken our identity over? Asked of our own identity servers, never of a peer.

        A newer revision signed by our key whose contacts are not ours means the identity was
        recovered elsewhere: this node stops using it (the document is set aside, the key kept) and
        says so with `local-identity-taken-over` and `local-identity-erased`.
        """
        now = asyncio.get_running_loop().time()
        if self.doc is None:
            return {"taken_over": self.local.taken_over() is not None}
        if now - self._takeover_checked < TAKEOVER_MIN_INTERVAL:
            # Checked a moment ago, maybe just before the news: check once more when the interval
            # ends (one pending check at most, so nudges cannot make us hammer the servers).
            if self._takeover_recheck is None or self._takeover_recheck.done():
                self._takeover_recheck = self.ctx.bus.spawn(
                    self._recheck_takeover(self._takeover_checked + TAKEOVER_MIN_INTERVAL - now))
            return {"taken_over": False}
        self._takeover_checked = now
        mine = self.doc
        newest, behind = None, []
        for source in mine.sources:
            try:
                found = await self._download_verified(source)
            except NotFoundError:
                if source == mine.idurl:
                    self._primary_failures += 1
                continue
            if source == mine.idurl:
                self._primary_failures = 0
            if found.publickey != mine.publickey:
                continue
            if found.revision < mine.revision:
                behind.append(source)
            # Same revision, other contacts: another holder of our key published it (we never
            # sign two documents with one revision).
            elif found.revision > mine.revision or list(found.contacts) != list(mine.contacts):
                newest = found if newest is None or found.revision > newest.revision else newest
        if newest is None or list(newest.contacts) == list(mine.contacts):
            await self._publish_where_behind(mine, behind)
            return {"taken_over": False}
        async with self._identity_lock:
            if self.doc is not mine:
                return {"taken_over": False}
            self.local.set_aside(newest)
            self.doc = None
        log.warning("identity %s was taken over by a node at %s (revision %d); this node stops using it",
                    mine.global_id, ", ".join(newest.contacts), newest.revision)
        info = {"idurl": mine.idurl, "global_id": mine.global_id, "revision": newest.revision,
                "contacts": list(newest.contacts), "taken_over": True}
        await self.ctx.bus.publish_event("local-identity-taken-over", info)
        await self.ctx.bus.publish_event("local-identity-erased", info)
        return {"taken_over": True}

    async def _publish_where_behind(self, mine: IdentityDocument, behind: list[str]) -> None:
        """Our servers that serve an older revision than ours get ours (a crash or an outage kept it
        from them after it was saved)."""
        for source in behind:
            server = ids.parse_idurl(source).server
            try:
                await self.client.upload(server, mine.to_xml())
                log.info("identity server %s had an older revision: revision %d published", server, mine.revision)
            except NodeError as exc:
                log.warning("identity server %s did not take revision %d: %s", server, mine.revision, exc)

    async def _recheck_takeover(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        try:
            await self.check_takeover()
        except NodeError as exc:
            log.info("identity check failed: %s", exc)

    async def _watch_takeover(self) -> None:
        """Every few minutes: were we taken over? Is our primary identity server gone for good?"""
        while True:
            await asyncio.sleep(TAKEOVER_CHECK_INTERVAL)
            try:
                await self.check_takeover()
                await self._rotate_if_stranded()
                await self.refresh_contacts()
            except NodeError as exc:
                log.info("identity check failed: %s", exc)

    async def _rotate_if_stranded(self) -> None:
        if self._primary_failures < AUTO_ROTATE_AFTER or self.doc is None:
            return
        if not self.ctx.config.get("services/identity-propagate/automatic-rotate-enabled"):
            return
        log.warning("primary identity server of %s unreachable %d times: rotating", self.doc.global_id,
                    self._primary_failures)
        try:
            await self.identity_rotate()
            self._primary_failures = 0
        except ConflictError as exc:
            log.info("automatic rotation not possible: %s", exc.message)

    @endpoint()
    async def identity_erase(self, erase_private_key: bool = False) -> Reply:
        erase_private_key = as_bool(erase_private_key, "erase_private_key")
        async with self._identity_lock:
            doc = self.doc
            keeps_something = self.local.taken_over() is not None or (erase_private_key and self.keyring.master)
            if doc is None and not keeps_something:
                raise NotFoundError("local identity is not valid or not exist", reason="identity_not_exist")
            self.local.erase()
            self.local.forget_takeover()
            self.doc = None
            if erase_private_key:
                self.keyring.erase_master()
        if doc is not None:
            await self.ctx.bus.publish_event("local-identity-erased", {"idurl": doc.idurl, "global_id": doc.global_id})
            if erase_private_key:
                await self.ctx.bus.publish_model("key", doc.primary.key_id(), None, deleted=True)
        what = "identity and private key" if erase_private_key else "identity"
        return Reply({"erased": True, "private_key_erased": bool(erase_private_key)}, f"local {what} erased")

    @endpoint()
    async def identity_rotate(self) -> Reply:
        async with self._identity_lock:
            old = self.require_identity()
            key = self.master_key()
            current = [ids.parse_idurl(s).server for s in old.sources]
            candidates = [s for s in self._preferred_servers() + self._known_servers() if s not in current]
            if not candidates:
                raise ConflictError("no other identity server is known to move to", reason="no_identity_server")
            doc, last_error = None, None
            for server in dict.fromkeys(candidates):
                # The earlier IDURLs stay as sources: peers that knew them follow to the new one.
                sources = [ids.server_url(server, old.name), *old.sources][: document.MAX_SOURCES]
                new_doc = document.new_document(sources, list(old.contacts), key, revision=old.revision + 1)
                try:
                    await self.client.upload(server, new_doc.to_xml())
                except NodeError as exc:
                    log.warning("identity server %s refused the rotated identity: %s", server, exc)
                    last_error = exc
                    continue
                doc = new_doc
                break
            if doc is None:
                assert last_error is not None
                raise last_error
            # The other sources and the old primary learn the new revision so fetchers follow it.
            for server in current:
                try:
                    await self.client.upload(server, doc.to_xml())
                except NodeError as exc:
                    log.warning("identity server %s did not take the rotated identity: %s", server, exc)
            moved = self.keyring.rename_owner(old.global_id, doc.global_id, doc.idurl)
            self._set_identity(doc)
        for old_id, new_id in moved:
            await self.ctx.bus.publish_model("key", old_id, None, deleted=True)
            record = self.keyring.get(new_id)
            if record is not None:
                await self.ctx.bus.publish_model("key", new_id, record.info())
        await self.ctx.bus.publish_event("local-identity-rotated", {"old_idurl": old.idurl, "new_idurl": doc.idurl,
                                                                     "global_id": doc.global_id})
        await self._identity_written(doc)
        return Reply(dict(doc.reference_info(), old_idurl=old.idurl),
                     f"identity moved from {old.idurl} to {doc.idurl}")

    @endpoint()
    async def identity_cache_list(self) -> list[dict[str, Any]]:
        return [doc.reference_info() for doc in sorted(self.cache.all(), key=lambda d: d.global_id)]

    # ---- identity plumbing -----------------------------------------------------------------

    def _set_identity(self, doc: IdentityDocument) -> None:
        self.local.save(doc)
        self.doc = doc

    async def _identity_written(self, doc: IdentityDocument) -> None:
        await self.ctx.bus.publish_event("local-identity-written",
                                         {"idurl": doc.idurl, "global_id": doc.global_id, "revision": doc.revision})
        record = self.keyring.master_record(doc.primary)
        if record is not None:
            await self.ctx.bus.publish_model("key", record.key_id, record.info())
        self._publish_nickname(doc)

    def _publish_nickname(self, doc: IdentityDocument) -> None:
        self.ctx.bus.spawn(self._nickname_task(doc.name, doc.idurl))

    async def _nickname_task(self, name: str, idurl: str) -> None:
        """Tell the DHT our nickname; the DHT process may be down or not built yet, so retry a little."""
        delay = NICKNAME_FIRST_DELAY
        for attempt in range(1, NICKNAME_ATTEMPTS + 1):
            try:
                await self.ctx.bus.call_internal("dht", "publish_nickname", timeout=15, nickname=name, idurl=idurl)
                log.info("nickname %s published in the DHT", name)
                return
            except NodeError as exc:
                log.info("publishing nickname %s failed (attempt %d): %s", name, attempt, exc)
            await asyncio.sleep(delay)
            delay *= 2

    async def _contacts(self) -> list[str]:
        """Where other nodes reach our transport: our relay's `proxy://` contact while the transport
        keeps one (we are behind NAT), else `tcp://<advertised host>:<tcp port>`."""
        try:
            relayed = await self.ctx.bus.call_internal("transport", "relay_contact", timeout=RELAY_ASK_TIMEOUT)
            if isinstance(relayed, dict) and relayed.get("contact"):
                return [str(relayed["contact"])]
        except NodeError as exc:
            log.debug("no relay contact from the transport: %s", exc.reason)
        host = await self._advertised_host()
        port = int(self.ctx.config.get("services/tcp-connections/tcp-port"))
        return [f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"]

    async def _advertised_host(self) -> str:
        """The configured external host, else a specific listen address, else the address a DHT peer
        sees us at (STUN), else the local address that routes to a DHT seed, else loopback."""
        config = self.ctx.config
        external = str(config.get("services/tcp-connections/external-host") or "").strip()
        if external:
            return external
        listen = str(config.get("services/tcp-connections/listen-host") or "").strip()
        if listen and listen not in ANY_ADDRESS:
            return listen
        try:
            seen = await self.ctx.bus.call_internal("dht", "stun", timeout=STUN_TIMEOUT)
            if seen.get("ip"):
                return str(seen["ip"])
        except NodeError as exc:
            log.info("no DHT peer told us our address: %s", exc.reason)
        return _route_address(self._seed_hosts()) or "127.0.0.1"

    def _seed_hosts(self) -> list[str]:
        network = network_config.load_selected(self.ctx.home.networks_dir,
                                               self.ctx.config.get("services/network/selected"))
        seeds = list(network.dht_seeds) if network else []
        extra = str(self.ctx.config.get("services/entangled-dht/known-nodes") or "")
        seeds += [s.strip() for s in extra.split(",") if s.strip()]
        return [seed.rpartition(":")[0] or seed for seed in seeds]

    @endpoint("refresh_contacts", internal=True)
    async def refresh_contacts_endpoint(self) -> dict[str, Any]:
        """The transport's relay changed: publish our contacts again if they differ."""
        changed = await self.refresh_contacts()
        return {"changed": changed, "contacts": list(self.doc.contacts) if self.doc else []}

    async def refresh_contacts(self) -> bool:
        """Publish a new revision when the address we are reached at changed; True if it did."""
        doc = self.doc
        if doc is None or not self._master_matches(doc):
            return False
        contacts = await self._contacts()
        if list(doc.contacts) == contacts:
            return False
        async with self._identity_lock:
            if self.doc is not doc:
                return False
            new = document.new_document(list(doc.sources), contacts, self.master_key(), revision=doc.revision + 1)
            # Saved before it is published: a crash in between leaves a local revision our servers
            # lack, which `check_takeover` publishes at the next start. The other order would leave
            # our servers ahead of us with other contacts: at its next start the node would take
            # its own new revision for a takeover and stop using its identity.
            self._set_identity(new)
            await self._upload_everywhere(new, required=True)
        log.info("our address changed from %s to %s: identity revision %d published", ", ".join(doc.contacts),
                 ", ".join(contacts), new.revision)
        await self._identity_written(new)
        return True

    def _known_servers(self) -> list[str]:
        """Identity servers of the selected network, then the `known-servers` option."""
        found: list[str] = []
        network = network_config.load_selected(self.ctx.home.networks_dir,
                                               self.ctx.config.get("services/network/selected"))
        listed = list(network.identity_servers) if network else []
        extra = str(self.ctx.config.get("services/identity-propagate/known-servers") or "")
        listed += [s for s in extra.split(",") if s.strip()]
        for server in listed:
            try:
                normal = ids.normalize_server(server)
            except InvalidArgumentError:
                log.warning("ignoring malformed identity server %r", server)
                continue
            if normal not in found:
                found.append(normal)
        return found

    def _preferred_servers(self) -> list[str]:
        """`services/identity-propagate/preferred-servers`: where rotation and creation go first."""
        text = str(self.ctx.config.get("services/identity-propagate/preferred-servers") or "")
        found = []
        for server in (s.strip() for s in text.split(",") if s.strip()):
            try:
                found.append(ids.normalize_server(server))
            except InvalidArgumentError:
                log.warning("ignoring malformed preferred identity server %r", server)
        return found

    def _identity_servers(self, preferred: Any) -> list[str]:
        if isinstance(preferred, str):
            preferred = [s for s in preferred.split(",") if s.strip()]
        if preferred is not None and not isinstance(preferred, list):
            raise InvalidArgumentError("preferred_servers must be a list of host:port")
        servers: list[str] = []
        for server in preferred or []:
            normal = ids.normalize_server(server)
            if normal not in servers:
                servers.append(normal)
        servers = servers or list(dict.fromkeys(self._preferred_servers() + self._known_servers()))
        if not servers:
            raise InvalidArgumentError("no identity servers known: pass preferred_servers or select a network",
                                       reason="no_identity_servers")
        return servers[: document.MAX_SOURCES]


def _unb64(text: Any, what: str) -> bytes:
    try:
        return crypto.unb64(text)
    except crypto.CryptoError:
        raise InvalidArgumentError(f"{what} must be base64") from None


def _expand(path: str) -> Path:
    return Path(path).expanduser().absolute()


def _read_backup(source: str) -> tuple[str | None, rsa.RSAPrivateKey]:
    """(IDURL, key) from backup text or the path of a backup file; raises `InvalidArgumentError`."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidArgumentError("private_key_source must be the backup text or its file path")
    text = source
    if "-----BEGIN" not in source:
        try:
            text = _expand(source.strip()).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(f"cannot read backup file: {exc}", reason="invalid_private_key") from None
    idurl = next((line.strip() for line in text.splitlines() if line.strip().startswith("http://")), None)
    start = text.find("-----BEGIN")
    if start < 0:
        raise InvalidArgumentError("the backup holds no private key", reason="invalid_private_key")
    try:
        key = crypto.load_private_key(text[start:].strip().encode())
    except crypto.CryptoError:
        raise InvalidArgumentError("the backup holds no valid private key", reason="invalid_private_key") from None
    return idurl, key


def _route_address(hosts: list[str]) -> str | None:
    """The local address the OS would send from to reach one of `hosts` (no packet is sent)."""
    for host in hosts:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((host, 9))
                address = str(probe.getsockname()[0])
        except OSError:
            continue
        if address and not address.startswith("0."):
            return address
    return None
