"""Other nodes' identities: downloaded from their identity servers, verified, confirmed, cached.

Anyone can list anyone's IDURL among the sources of a document signed by its own key. A source
counts only when its own identity server serves a document with the same key (or the cache holds
that key for it already); see `idcache` for what happens to the others. So fetching a document
may take one more download per source it claims that this node does not know yet, made at once.

No bus code: the service resolves user ids and answers for its own identity, then asks here.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from common.errors import NodeError, NotFoundError
from services.identity import document
from services.identity.document import DocumentError, IdentityDocument
from services.identity.idcache import CacheConflictError, IdentityCache, UnconfirmedError
from services.identity.idclient import IdServerClient

log = logging.getLogger(__name__)

CACHE_TTL = 600.0
"""Seconds a cached identity of another node is used before it is fetched again."""


class PeerIdentities:
    """Fetch, confirm and cache other nodes' identity documents; one download per IDURL at a time."""

    def __init__(self, cache: IdentityCache, client: IdServerClient):
        self.cache = cache
        self.client = client
        self._inflight: dict[str, asyncio.Future[IdentityDocument]] = {}

    async def fetch(self, url: str, name: str, refresh: bool = False) -> IdentityDocument:
        """The verified identity at IDURL `url` (whose name is `name`), from cache or its server.

        A cached copy younger than `CACHE_TTL` is used unless `refresh`; an older one is refreshed
        but still served when its server cannot be reached. Concurrent fetches of one IDURL share
        a single download. Raises `NotFoundError` (`identity_not_found`).
        """
        cached = self.cache.get(url)
        if cached is not None and not refresh and self.cache.age(url) < CACHE_TTL:
            return cached
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.ensure_future(self._download_and_cache(url, name))
            self._inflight[url] = task
            task.add_done_callback(functools.partial(self._forget_inflight, url))
        try:
            return await asyncio.shield(task)
        except NotFoundError:
            if cached is not None and not refresh:
                log.info("identity server of %s unreachable, serving the cached copy", url)
                return cached
            raise

    def _forget_inflight(self, url: str, _task: object) -> None:
        self._inflight.pop(url, None)

    async def _download_and_cache(self, url: str, name: str) -> IdentityDocument:
        """Fetch `url`, confirm the other sources the document claims, cache what is confirmed."""
        doc = await self.download_verified(url)
        served = {url}
        if url not in doc.sources:
            if doc.name != name:
                raise NotFoundError(f"{url} serves the identity of another name", reason="identity_not_found")
            # The node moved to another server and told the old one: follow it once.
            try:
                newer = await self.download_verified(doc.idurl)
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
                return (await self.download_verified(idurl)).publickey == publickey
            except NodeError:
                return False

        answers = await asyncio.gather(*(serves(idurl) for idurl in idurls))
        return {idurl for idurl, same in zip(idurls, answers, strict=True) if same}

    async def download_verified(self, url: str) -> IdentityDocument:
        """The document `url` serves now, verified, not cached; raises `NotFoundError`."""
        raw = await self.client.download(url)
        try:
            return document.parse_verified(raw)
        except DocumentError as exc:
            raise NotFoundError(f"identity at {url} cannot be verified: {exc}", reason="identity_not_found") from None
