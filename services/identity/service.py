"""The identity process's bus endpoints: the node's identity, the keyring agent, the ID server.

Identity API methods, the identity's life (create, recover, rotate, erase, takeover checks, new
contacts) and the `identity.fetch` / `my_identity` verbs live here; the cryptographic verbs
(`identity.sign`, `seal`, …) in `crypto_endpoints.py`; the key API methods and the
`Key`/`AuditKey` packet handlers in `keys_endpoints.py`. Other nodes' identities are fetched and
confirmed by `peer_identities`, our contacts and identity servers found by `addresses`, pinned
peers kept current by `peer_pins`; domain rules are in the pure modules (`document`, `keyring`,
`idcache`, `idstore`, `keyshare`). This module decodes, orchestrates, encodes and emits events.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import crypto
from common.endpoint import Reply, endpoint
from common.errors import ConflictError, InvalidArgumentError, NodeError, NotFoundError
from common.fsutil import atomic_write
from common.process import ProcessContext
from common.values import as_bool
from common import ids
from services.identity import document
from services.identity.document import DocumentError, IdentityDocument
from services.identity import peer_pins
from services.identity.addresses import Addresses
from services.identity.crypto_endpoints import CryptoEndpoints
from services.identity.idcache import IdentityCache
from services.identity.idclient import IdServerClient
from services.identity.idstore import IdServerStore
from services.identity.keyring import Keyring
from services.identity.local_identity import LocalIdentity
from services.identity.peer_identities import PeerIdentities

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from services.identity.idserver import IdServer

log = logging.getLogger(__name__)

NICKNAME_ATTEMPTS = 5
NICKNAME_FIRST_DELAY = 1.0
IDSERVER_OPTIONS = "services/identity-server/"
CONTACT_OPTIONS = ("services/tcp-connections/", "services/network/selected", "services/entangled-dht/known-nodes")
TAKEOVER_CHECK_INTERVAL = 120.0
"""Seconds between checks that no other node took our identity over (a nudge checks at once)."""
TAKEOVER_MIN_INTERVAL = 5.0
"""A nudge from outside costs at most one look at our identity servers per this many seconds."""
AUTO_ROTATE_AFTER = 3
"""Consecutive failed looks at our primary identity server before an automatic rotation."""


class IdentityService(CryptoEndpoints):
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
        self.peers = PeerIdentities(self.cache, self.client)
        self.addresses = Addresses(ctx.bus, ctx.config, ctx.home.networks_dir)
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


    async def fetch_document(self, user_id: str, refresh: bool = False) -> IdentityDocument:
        """The verified identity of a user (IDURL, global id or key id): ours, or another node's
        from the cache or its server (`PeerIdentities.fetch`); raises `NotFoundError`."""
        try:
            user = ids.to_idurl(user_id)
        except InvalidArgumentError:
            raise NotFoundError(f"identity {user_id!r} was not found: not an IDURL or a global id",
                                reason="identity_not_found") from None
        if self.doc is not None and user.url in self.doc.sources:
            return self.doc
        return await self.peers.fetch(user.url, user.name, refresh)

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
            servers = self.addresses.identity_servers(preferred_servers)
            key = self.keyring.master
            if key is None:
                bits = int(self.ctx.config.get("personal/private-key-size"))
                key = await asyncio.to_thread(crypto.generate_private_key, bits)
                # Kept even if the upload fails: a retry must present the same key to servers
                # that already accepted the name.
                self.keyring.set_master(key)
            try:
                contacts = await self.addresses.contacts()
                doc = document.new_document([ids.server_url(s, name) for s in servers], contacts, key)
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
                doc = document.new_document(list(found.sources), await self.addresses.contacts(), key,
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
                found = await self.peers.download_verified(source)
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
            known = self.addresses.preferred_servers() + self.addresses.known_servers()
            candidates = [s for s in known if s not in current]
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
        contacts = await self.addresses.contacts()
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
