"""The dht process's bus endpoints: decode a request, call the directory or node, encode the reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from common import rsa_public
from common.endpoint import endpoint
from common.errors import ConflictError, InvalidArgumentError, NodeError, UnavailableError
from common.network_config import load_selected, split_hostport
from common.process import ProcessContext, ServiceBase
from services.dht import layers, records
from services.dht.connector import Maintainer
from services.dht.directory import Directory
from services.dht.node import DhtNode, node_info
from services.dht.storage import DhtStore

log = logging.getLogger(__name__)

TICK_CONNECTED = 5.0
TICK_ALONE = 1.0
RPC_TIMEOUT = 3.0
IDURL_CACHE_TTL = 60.0


class BusIdentity:
    """`IdentityClient` over the bus: the identity process signs and knows the keys."""

    def __init__(self, ctx: ProcessContext):
        self.ctx = ctx

    async def sign(self, data: bytes) -> dict[str, Any]:
        return await self.ctx.bus.call_internal("identity", "sign", data=rsa_public.b64(data))  # type: ignore[no-any-return]

    async def my_identity(self) -> dict[str, Any]:
        return await self.ctx.bus.call_internal("identity", "my_identity")  # type: ignore[no-any-return]

    async def fetch(self, idurl: str) -> dict[str, Any]:
        return await self.ctx.bus.call_internal("identity", "fetch", idurl=idurl)  # type: ignore[no-any-return]


class DhtService(ServiceBase):
    """Serves dht_*, user_search/observe, suppliers_list_dht and the `dht.*` internal verbs."""

    def __init__(self, ctx: ProcessContext):
        super().__init__(ctx)
        self.store = DhtStore(ctx.home.state("dht") / "dht.sqlite")
        self.node = DhtNode(self.store, rpc_timeout=RPC_TIMEOUT)
        self.identity = BusIdentity(ctx)
        self.directory = Directory(self.node, self.identity)
        self.node.verifier = self.directory.verify_envelope
        self.maintainer = Maintainer(self.node, self.directory, self._seeds, self._my_idurl,
                                     lambda: layers.attached_layers(self.ctx.config.get), self._emit,
                                     ctx.automats)
        self._loop_task: asyncio.Task[Any] | None = None
        self._wake = asyncio.Event()
        self._idurl: str | None = None
        self._idurl_at = 0.0

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        port = int(self.ctx.config.get("services/entangled-dht/udp-port"))
        await self.node.listen(port, str(self.ctx.config.get("services/entangled-dht/listen-host") or "0.0.0.0"))
        self._loop_task = self.ctx.bus.spawn(self._upkeep())

    async def stop(self) -> None:
        self.maintainer.machine.fire("stopped")
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        self.node.stop()
        self.store.close()

    async def on_config_changed(self, keys: list[str]) -> None:
        if any(k in layers.SERVICE_LAYERS or k.startswith("services/entangled-dht/") or k == "services/network/selected"
               for k in keys):
            self.maintainer.force_announce()
            self._wake.set()

    async def _upkeep(self) -> None:
        while True:
            try:
                await self.maintainer.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - upkeep must go on whatever one round hit
                log.exception("dht upkeep round failed")
            interval = TICK_CONNECTED if self.maintainer.connected else TICK_ALONE
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()

    async def _emit(self, event_id: str, data: dict[str, Any]) -> None:
        await self.ctx.bus.publish_event(event_id, data)

    async def _seeds(self) -> list[tuple[str, int]]:
        """Seed addresses from the selected network and the known-nodes option, as (ip, port)."""
        texts: list[str] = []
        network = load_selected(self.ctx.home.networks_dir, str(self.ctx.config.get("services/network/selected")))
        if network is not None:
            texts.extend(network.dht_seeds)
        texts.extend(t.strip() for t in str(self.ctx.config.get("services/entangled-dht/known-nodes") or "").split(",")
                     if t.strip())
        found = []
        for text in dict.fromkeys(texts):
            try:
                host, port = split_hostport(text)
                found.append((await _resolve(host), port))
            except (ValueError, OSError):
                log.warning("ignoring DHT seed %r", text)
        return found

    async def _my_idurl(self) -> str | None:
        # Cached briefly: an identity can be created (or recovered) while the process runs.
        if self._idurl and time.monotonic() - self._idurl_at < IDURL_CACHE_TTL:
            return self._idurl
        try:
            me = await self.identity.my_identity()
        except NodeError:
            return None
        self._idurl = str(me.get("idurl") or "") or None
        self._idurl_at = time.monotonic()
        return self._idurl

    # --- API methods -----------------------------------------------------------------------

    @endpoint()
    async def dht_value_set(self, key: str, value: Any, expire: Any = None, record_type: str = "skip_validation",
                            layer_id: Any = 0) -> dict[str, Any]:
        data = records.parse_json_value(value)
        return await self.directory.write(record_type, _key(key), data, _layer(layer_id), expire)

    @endpoint()
    async def dht_value_get(self, key: str, record_type: str = "skip_validation", layer_id: Any = 0,
                            use_cache_ttl: Any = None) -> dict[str, Any]:
        key = _key(key)
        ttl = _optional_float(use_cache_ttl, "use_cache_ttl")
        outcome = await self.directory.read(record_type, key, _layer(layer_id), ttl)
        if outcome.ok:
            return {"read": "success", "my_dht_id": self.node.dht_id, "key": key, "value": outcome.data}
        reply: dict[str, Any] = {"read": "failed", "my_dht_id": self.node.dht_id, "key": key,
                                 "closest_nodes": outcome.closest}
        if outcome.reason:
            reply["error"] = outcome.error
            reply["reason"] = outcome.reason
        return reply

    @endpoint()
    async def dht_node_find(self, node_id_64: Any = None, layer_id: Any = 0) -> dict[str, Any]:
        layer = _layer(layer_id)
        if node_id_64 in (None, ""):
            target = os.urandom(20)
        else:
            try:
                target = bytes.fromhex(str(node_id_64))
            except ValueError:
                target = b""
            if len(target) != 20:
                raise InvalidArgumentError("node_id_64 must be 40 hex digits", reason="invalid_argument")
        if layer == layers.DEFAULT:
            nodes, _ = await self.node.find_nodes(target)
            closest = [node_info(n) for n in nodes]
        else:
            members = await self.directory.members(layer)
            ranked = sorted(members.values(), key=lambda m: _distance(m.get("dht_id", ""), target))
            closest = [{"address": m.get("address", ""), "dht_id": m.get("dht_id", ""), "idurl": m.get("idurl", "")}
                       for m in ranked[: self.node.ksize]]
        return {"my_dht_id": self.node.dht_id, "lookup": target.hex(), "layer_id": layer, "closest_nodes": closest}

    @endpoint()
    async def dht_user_random(self, layer_id: Any = 0, count: Any = 1) -> list[str]:
        number = int(_optional_float(count, "count") or 1)
        return await self.directory.random_users(_layer(layer_id), number, exclude=await self._my_idurl() or "")

    @endpoint()
    async def dht_local_db_dump(self) -> dict[str, list[dict[str, Any]]]:
        dump: dict[str, list[dict[str, Any]]] = {}
        for _, text in self.store.items():
            try:
                env = records.decode_envelope(text)
            except records.RecordError:
                continue
            dump.setdefault(str(env["layer_id"]), []).append({
                "key": env["key"],
                "record_type": env["record_type"],
                "expireSeconds": max(0, int(env["expire_at"] - env["published"])),
                "lastPublished": int(env["published"]),
                "originalPublisherID": env["publisher"],
                "originallyPublished": int(env["published"]),
                "revision": (env["data"].get("revision", 1) if isinstance(env["data"], dict) else 1) or 1,
                "scope": "global",
                "value": env["data"],
            })
        return dump

    @endpoint()
    async def user_search(self, nickname: str, attempts: Any = 1) -> dict[str, Any]:
        return await self.directory.search_nickname(nickname, int(_optional_float(attempts, "attempts") or 1))

    @endpoint()
    async def user_observe(self, nickname: str, attempts: Any = 3) -> list[dict[str, Any]]:
        return await self.directory.observe_nickname(nickname, int(_optional_float(attempts, "attempts") or 1))

    @endpoint()
    async def suppliers_list_dht(self, customer_id: str | None = None) -> dict[str, Any]:
        if customer_id:
            idurl = records.idurl_from_id(customer_id)
        else:
            idurl = await self._my_idurl() or ""
            if not idurl:
                raise NodeError("this node has no identity yet", reason="identity_not_exist", status=404)
        outcome = await self.directory.read("suppliers", idurl)
        if not outcome.ok:
            empty: dict[str, Any] = {"customer_idurl": idurl, "ecc_map": None, "publisher_idurl": None,
                                     "revision": None, "suppliers": [], "timestamp": None}
            if outcome.reason:
                empty["error"], empty["reason"] = outcome.error, outcome.reason
            return empty
        data = outcome.data
        return {f: data.get(f) for f in ("customer_idurl", "ecc_map", "publisher_idurl", "revision", "suppliers",
                                         "timestamp")}

    # --- internal verbs --------------------------------------------------------------------

    @endpoint("publish_nickname", internal=True)
    async def publish_nickname(self, nickname: str, idurl: str) -> dict[str, Any]:
        return await self.directory.publish_nickname(nickname, idurl)

    @endpoint("write_record", internal=True)
    async def write_record(self, record_type: str, key: str, value: Any, layer_id: Any = 0,
                           expire: Any = None) -> dict[str, Any]:
        return await self.directory.write(record_type, _key(key), value, _layer(layer_id), expire)

    @endpoint("read_record", internal=True)
    async def read_record(self, record_type: str, key: str, layer_id: Any = 0,
                          use_cache_ttl: Any = None) -> dict[str, Any]:
        outcome = await self.directory.read(record_type, _key(key), _layer(layer_id),
                                            _optional_float(use_cache_ttl, "use_cache_ttl"))
        if outcome.ok:
            return {"read": "success", "key": key, "value": outcome.data}
        return {"read": "failed", "key": key, "error": outcome.error, "reason": outcome.reason or "not_found"}

    @endpoint("stun", internal=True)
    async def stun(self, udp_port: int | None = None, dht_port: int | None = None) -> dict[str, Any]:
        """The address DHT peers agree they see us at (`services/dht/stun.py`): from the DHT's own
        socket, or from local `udp_port`; asking the seeds and contacts, or only the seeds' hosts at
        `dht_port` (the reference's `network_stun`). The identity's advertised address and the
        transport's relay decision both come from here."""
        seeds = await self._seeds()
        if dht_port:
            seeds = [(host, int(dht_port)) for host, _ in seeds]
        mine = self.node.address[1] if self.node.address else None
        local: int | None
        if udp_port and int(udp_port) != mine:
            try:
                found = await self.node.stun_from_port(int(udp_port), seeds)
            except OSError as err:
                raise ConflictError(f"UDP port {udp_port} cannot be used: {err.strerror}",
                                    reason="port_in_use") from None
            local = int(udp_port)
        else:
            found = await self.node.stun(seeds, only=bool(dht_port))
            local = mine
        if found is None:
            raise UnavailableError("no DHT peers answered, or they did not agree", reason="dht_not_connected")
        return {"ip": found[0], "port": found[1], "local_port": local}

    @endpoint("status", internal=True)
    async def status(self) -> dict[str, Any]:
        stats = self.node.proto.stats
        attached = self.maintainer.attached
        active = self.directory.active_layers | attached
        report = []
        for layer_id in sorted(set(layers.NAMES) | active):
            base = layer_id == layers.DEFAULT
            report.append({
                "layer_id": layer_id,
                "name": layers.NAMES.get(layer_id, "UNKNOWN"),
                "node_id": self.node.dht_id,
                "active": layer_id in active,
                "attached": layer_id in attached,
                "buckets": self.node.bucket_count() if base else 0,
                "contacts": len(self.node.contacts()) if base else self.directory.known_members.get(layer_id, 0),
                "data_store_items": self.store.count(layer_id),
                "node_items": 0,
                "packets_received": stats.packets_received if base else 0,
                "packets_sent": stats.packets_sent if base else 0,
                "rpc_calls": dict(stats.rpc_calls) if base else {},
                "rpc_responses": dict(stats.rpc_responses) if base else {},
            })
        return {
            "udp_port": self.node.address[1] if self.node.address else None,
            "state": self.maintainer.machine.state,
            "bytes_received": stats.bytes_received,
            "bytes_sent": stats.bytes_sent,
            "stores_refused": dict(stats.refused),  # peers' STOREs refused, by reason ("busy": over budget)
            "layers": report,
        }


async def _resolve(host: str) -> str:
    """kademlia needs IP addresses, seeds may be host names."""
    try:
        socket.inet_aton(host)
        return host
    except OSError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    return str(infos[0][4][0])


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidArgumentError("key must be a non-empty string", reason="invalid_argument")
    return key


def _layer(value: Any) -> int:
    try:
        return layers.check_layer_id(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError("layer_id must be an integer from 0 to 255", reason="invalid_argument") from None


def _optional_float(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be a number", reason="invalid_argument")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number", reason="invalid_argument") from None
    if number < 0:
        raise InvalidArgumentError(f"{name} must not be negative", reason="invalid_argument")
    return number


def _distance(dht_id_hex: str, target: bytes) -> int:
    try:
        return int(dht_id_hex, 16) ^ int.from_bytes(target, "big")
    except ValueError:
        return 1 << 161
