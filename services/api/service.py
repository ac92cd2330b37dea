"""The api process: config, events, process and service control, automats, networks.

The gateway (REST + WebSocket) runs inside this process and calls these endpoints directly;
methods owned by other processes go over the bus.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import re
import ssl
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import aiohttp

from common import codec, network_config, subjects
from common.automat import Automat
from common.config_schema import OPTIONS
from common.endpoint import Reply, endpoint
from common.errors import ConflictError, InvalidArgumentError, NodeError, NotFoundError, UnavailableError
from common.process import ProcessContext, ServiceBase
from common.services_catalog import BY_NAME, CATALOG, dependents
from services.api.event_log import EventLog
from services.api.events import EventHub
from services.api.services_state import ON, compute_states, describe

if TYPE_CHECKING:
    from common.supervisor import SupervisorClient

log = logging.getLogger(__name__)

AFTER_RESPONSE: contextvars.ContextVar[list[Callable[[], Awaitable[None]]] | None] = contextvars.ContextVar(
    "after_response", default=None
)
"""Actions to run once the current response has been sent (stop/restart of the node itself)."""

EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
PYTHON_PROCESSES = subjects.PROCESSES
PING_TIMEOUT = 1.0
LISTEN_TIMEOUT = 25.0
SERVICE_REFRESH_SECONDS = 2.0


class ServiceMachine(Automat):
    """Mirrors one logical service's state, so `automats_list` shows the services as the reference does."""

    initial = "OFF"


GRACEFUL_STOP_WAIT = 600.0
"""The longest `process_stop(instant=false)` waits for transfers to finish."""


def _resident_bytes(pid: int) -> int:
    """A program's resident memory (0 when it is not running or /proc cannot say)."""
    try:
        with open(f"/proc/{int(pid)}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") if pid else 0
    except (OSError, ValueError, IndexError):
        return 0


def _after_response(action: Callable[[], Awaitable[None]]) -> None:
    actions = AFTER_RESPONSE.get()
    if actions is None:
        asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(action()))
    else:
        actions.append(action)


class ApiService(ServiceBase):
    """Endpoints owned by the api process."""

    def __init__(self, ctx: ProcessContext):
        super().__init__(ctx)
        self.events = EventHub()
        self.event_log = EventLog(ctx.home.logs / "event.log")
        self.events.listen(self.event_log.write)
        self.restarting: set[str] = set()
        self._tls: ssl.SSLContext | None = None
        self.machines = {s.name: ServiceMachine(s.name, ctx.automats) for s in CATALOG}
        self.gateway: Any = None
        self._watcher: asyncio.Future[None] | None = None

    @functools.cached_property
    def supervisor(self) -> SupervisorClient:
        """supervisord's client, imported with the first process call (XML-RPC costs about 1.5 MB)."""
        from common.supervisor import SupervisorClient

        return SupervisorClient(self.ctx.home.supervisor_socket)

    async def start(self) -> None:
        await self.ctx.bus.nc.subscribe(subjects.EVENTS_ALL, cb=self._on_event)
        from services.api.gateway import Gateway  # the HTTP edge, kept out of the domain imports

        self.gateway = Gateway(self, self.ctx)
        await self.gateway.start()
        self._watcher = asyncio.ensure_future(self._watch_services())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self.gateway is not None:
            await self.gateway.stop()
        self.event_log.close()

    async def _on_event(self, msg: Any) -> None:
        try:
            event = codec.loads(msg.data)
        except ValueError:
            return
        if isinstance(event, dict) and isinstance(event.get("event_id"), str):
            self.events.feed(event)

    # ---- process -------------------------------------------------------------------------

    @endpoint()
    async def process_health(self) -> None:
        return None

    @endpoint()
    async def process_info(self) -> dict[str, Any]:
        processes = await self.supervisor.processes()
        for proc in processes:
            proc["memory"] = _resident_bytes(proc["pid"])
        alive = await self.alive_processes()
        states = await self.service_states(alive)
        return {
            "processes": processes,
            "bus": {name: name in alive for name in PYTHON_PROCESSES},
            "automats": {"active": len(self.ctx.automats.all())},
            "config": {"options": len(OPTIONS)},
            "service": {"active": sum(1 for s in states.values() if s == ON)},
            "event": {"total": sum(self.events.counts.values())},
            "home": str(self.ctx.home.root),
            "pid": os.getpid(),
        }

    @endpoint()
    async def process_stop(self, instant: bool = True) -> Reply:
        """`instant`: stop now (each program gets its usual few seconds to close). Otherwise stop once
        no upload, download or rebuild runs any more, waiting at most `GRACEFUL_STOP_WAIT`."""
        if instant:
            _after_response(lambda: self.supervisor.call("shutdown"))
            return Reply(None, "stopping the node")
        self.ctx.bus.spawn(self._stop_when_idle())
        return Reply(None, "stopping the node once its transfers are finished")

    async def _stop_when_idle(self) -> None:
        deadline = time.monotonic() + GRACEFUL_STOP_WAIT
        while time.monotonic() < deadline:
            try:
                items = await self.ctx.bus.call("api.storage.transfers_list", {}, timeout=10)
            except NodeError:
                break  # storage not answering: nothing of it to wait for
            if not any(item.get("incoming") or item.get("outgoing") for item in items or []):
                break
            await asyncio.sleep(1.0)
        log.info("stopping the node (graceful)")
        await self.supervisor.call("shutdown")

    @endpoint()
    async def process_restart(self) -> Reply:
        _after_response(lambda: self.supervisor.call("restart"))
        return Reply(None, "restarting the node")

    @endpoint()
    async def process_debug(self) -> None:
        if not sys.stdin or not sys.stdin.isatty():
            raise ConflictError("the node was not started in a terminal: no debugger can attach",
                                reason="not_in_terminal")
        import pdb

        pdb.set_trace()  # noqa: T100 - this method exists to do exactly this

    # ---- config --------------------------------------------------------------------------

    @endpoint()
    async def config_get(self, key: str, include_info: bool = False) -> dict[str, Any]:
        info = self.ctx.config.describe(key)
        if include_info:
            return info
        return {"key": info["key"], "value": info["value"], "type": info["type"]}

    @endpoint()
    async def config_set(self, key: str, value: Any) -> dict[str, Any]:
        old = self.ctx.config.get(key)
        self.ctx.config.set(key, value)
        info = self.ctx.config.describe(key)
        await self._config_changed([info["key"]])
        return dict(info, old_value=old)

    @endpoint()
    async def configs_list(self, sort: bool = False, include_info: bool = False) -> list[dict[str, Any]]:
        return [self.ctx.config.describe(key, bool(include_info)) for key in self.ctx.config.keys(bool(sort))]

    @endpoint()
    async def configs_tree(self, include_info: bool = False) -> list[dict[str, Any]]:
        return [self.ctx.config.tree(include_info=bool(include_info))]

    async def _config_changed(self, keys: list[str]) -> None:
        await self.ctx.bus.publish_event(subjects.CONFIG_CHANGED_EVENT, {"keys": keys})

    # ---- networks ------------------------------------------------------------------------

    @endpoint()
    async def network_create(self, url: str) -> Reply:
        text = await self._read_network_source(url)
        try:
            doc = codec.loads(text)
        except ValueError:
            raise InvalidArgumentError("network configuration is not valid JSON", reason="invalid_network") from None
        network = network_config.NetworkConfig.parse(doc)
        network_config.save(self.ctx.home.networks_dir, network)
        if not self.ctx.config.get("services/network/selected"):
            await self._select(network.name)
        return Reply(network.to_dict(), f"network configuration {network.name} loaded")

    async def _read_network_source(self, url: str) -> bytes:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme in ("http", "https"):
            try:
                timeout = aiohttp.ClientTimeout(total=10)
                tls = await self._tls_context() if parsed.scheme == "https" else True
                async with (aiohttp.ClientSession(timeout=timeout) as session,
                            session.get(url, ssl=tls) as response):
                    if response.status != 200:
                        raise NotFoundError(f"{url} answered {response.status}", reason="network_not_found")
                    return await response.content.read(1024 * 1024)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise NotFoundError(f"cannot read {url}: {exc}", reason="network_not_found") from None
        path = Path(parsed.path if parsed.scheme == "file" else url).expanduser()
        try:
            if path.stat().st_size > 1024 * 1024:
                raise InvalidArgumentError("network configuration is too large", reason="invalid_network")
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"no network configuration at {url}", reason="network_not_found") from None
        except IsADirectoryError:
            raise InvalidArgumentError(f"{url} is a folder", reason="invalid_network") from None

    async def _tls_context(self) -> ssl.SSLContext:
        """A verifying TLS client context with the system's CA store, made on first use.

        aiohttp's own contexts trust nothing in this process (`lean.import_without_ca_store`).
        """
        if self._tls is None:
            self._tls = await asyncio.to_thread(ssl.create_default_context)  # reads the CA bundle
        return self._tls

    @endpoint()
    async def network_select(self, name: str) -> Reply:
        network = network_config.load(self.ctx.home.networks_dir, name)
        await self._select(network.name)
        return Reply(network.to_dict(), f"network {network.name} selected")

    async def _select(self, name: str) -> None:
        self.ctx.config.set("services/network/selected", name)
        await self._config_changed(["services/network/selected"])

    @endpoint()
    async def network_configuration(self) -> dict[str, Any]:
        selected = self.ctx.config.get("services/network/selected")
        network = network_config.load_selected(self.ctx.home.networks_dir, selected)
        available = sorted(p.stem for p in self.ctx.home.networks_dir.glob("*.json"))
        doc: dict[str, Any] = network.to_dict() if network else {"name": "", "identity_servers": [], "dht_seeds": []}
        return dict(doc, selected=selected, available=available)

    # ---- services ------------------------------------------------------------------------

    async def alive_processes(self) -> set[str]:
        """Processes that answer a ping on the bus now."""

        async def ping(name: str) -> str | None:
            if name == self.ctx.name:
                return name
            try:
                await self.ctx.bus.call_internal(name, "ping", timeout=PING_TIMEOUT)
                return name
            except NodeError:
                return None

        return {n for n in await asyncio.gather(*(ping(n) for n in PYTHON_PROCESSES)) if n}

    async def service_states(self, alive: set[str] | None = None) -> dict[str, str]:
        """Derive every logical service's state now; changes go to `service` model listeners."""
        alive = await self.alive_processes() if alive is None else alive
        reported: dict[str, str] = {}
        if "ledger" in alive:
            try:
                reply = await self.ctx.bus.call_internal("ledger", "service_states", timeout=PING_TIMEOUT)
                reported = dict(reply["states"])
            except NodeError:
                reported = {}
        states = compute_states(lambda s: bool(self.ctx.config.get(s.config_path)), alive, self.restarting, reported)
        for name, state in states.items():
            machine = self.machines[name]
            if machine.state != state:
                machine.set_state(state, "refresh")
                await self.ctx.bus.publish_model("service", name, {"name": name, "state": state})
        return states

    async def _watch_services(self) -> None:
        """Keep the service machines current so state changes are pushed without being asked."""
        while True:
            try:
                await self.service_states()
            except Exception:  # noqa: BLE001 - a failed refresh is retried on the next round
                log.exception("service state refresh failed")
            await asyncio.sleep(SERVICE_REFRESH_SECONDS)

    def _describe(self, name: str, states: dict[str, str]) -> dict[str, Any]:
        service = BY_NAME[name]
        index = list(BY_NAME).index(name) + 1
        return describe(service, states[name], bool(self.ctx.config.get(service.config_path)), index)

    @staticmethod
    def _service(service_name: str) -> str:
        if service_name not in BY_NAME:
            raise NotFoundError(f"service {service_name} was not found", reason="service_not_found")
        return service_name

    @endpoint()
    async def services_list(self, with_configs: bool = False, as_tree: bool = False) -> Any:
        states = await self.service_states()
        items = [self._describe(s.name, states) for s in sorted(CATALOG, key=lambda s: s.name)]
        if with_configs:
            for item in items:
                prefix = item["config_path"].rsplit("/", 1)[0] + "/"
                item["configs"] = [self.ctx.config.describe(k) for k in OPTIONS if k.startswith(prefix)]
        if as_tree:
            return {item["name"]: item for item in items}
        return items

    @endpoint()
    async def service_info(self, service_name: str) -> dict[str, Any]:
        return self._describe(self._service(service_name), await self.service_states())

    @endpoint()
    async def service_health(self, service_name: str) -> Reply:
        name = self._service(service_name)
        states = await self.service_states()
        if states[name] != ON:
            raise UnavailableError(f"{name} is {states[name]}", reason="service_not_healthy")
        return Reply(self._describe(name, states), f"{name} is healthy")

    @endpoint()
    async def service_start(self, service_name: str) -> Reply:
        return await self._switch(self._service(service_name), True)

    @endpoint()
    async def service_stop(self, service_name: str) -> Reply:
        return await self._switch(self._service(service_name), False)

    async def _switch(self, name: str, enabled: bool) -> Reply:
        service = BY_NAME[name]
        self.ctx.config.set(service.config_path, enabled)
        await self._config_changed([service.config_path])
        await self.ctx.bus.publish_event("service-started" if enabled else "service-stopped", {"name": name})
        info = self._describe(name, await self.service_states())
        return Reply(info, f"{name} was switched {'on' if enabled else 'off'}")

    @endpoint()
    async def service_restart(self, service_name: str, wait_timeout: float = 10) -> Reply:
        name = self._service(service_name)
        process = BY_NAME[name].process
        if process not in PYTHON_PROCESSES:
            raise ConflictError(f"{name} is not installed on this node", reason="service_not_installed")
        if process == self.ctx.name:
            # Restarting the gateway itself: answer first, then let supervisord replace this process.
            _after_response(lambda: self.supervisor.restart_program(process))
            return Reply({"name": name, "process": process, "pid_before": os.getpid(), "dependents": dependents(name)},
                         f"{name} is restarting with its process {process}")
        before = await self._pid(process)
        self.restarting.add(process)
        try:
            await self.supervisor.restart_program(process)
            await self._wait_alive(process, wait_timeout)
        finally:
            self.restarting.discard(process)
        after = await self._pid(process)
        await self.ctx.bus.publish_event("service-restarted", {"name": name, "process": process, "pid": after})
        return Reply({"name": name, "process": process, "pid_before": before, "pid_after": after,
                      "dependents": dependents(name)}, f"{name} was restarted")

    async def _pid(self, process: str) -> int:
        info = await self.supervisor.call("getProcessInfo", process)
        return int(info["pid"])

    async def _wait_alive(self, process: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await self.ctx.bus.call_internal(process, "ping", timeout=PING_TIMEOUT)
                return
            except NodeError:
                await asyncio.sleep(0.05)
        raise UnavailableError(f"{process} did not come back within {timeout:g}s", reason="restart_timeout")

    # ---- events --------------------------------------------------------------------------

    @endpoint()
    async def events_list(self) -> dict[str, int]:
        return dict(sorted(self.events.counts.items()))

    @endpoint()
    async def event_send(self, event_id: str, data: Any = None) -> dict[str, Any]:
        if not EVENT_ID_RE.match(event_id):
            raise InvalidArgumentError("event_id may only have letters, digits, - and _", reason="invalid_argument")
        if isinstance(data, str):
            try:
                data = codec.loads(data)
            except ValueError:
                pass
        await self.ctx.bus.publish_event(event_id, data)
        return {"event_id": event_id, "data": data}

    @endpoint()
    async def event_listen(self, consumer_callback_id: str) -> list[dict[str, Any]]:
        if not consumer_callback_id or len(consumer_callback_id) > 128:
            raise InvalidArgumentError("consumer_callback_id must be 1 to 128 characters")
        events = await self.events.poll(consumer_callback_id, LISTEN_TIMEOUT)
        return [{"id": e["event_id"], "event_id": e["event_id"], "data": e.get("data"), "time": e.get("created")}
                for e in events]

    @endpoint("stream_message", internal=True)
    async def stream_message(self, payload: Any) -> dict[str, int]:
        """Push a message to every WebSocket client as `{"type": "stream_message", "payload": …}`.

        Called by the messaging process for each message sent or received; answers how many
        clients it reached (a message some client got counts as consumed).
        """
        return {"sockets": await self.gateway.push_stream_message(payload) if self.gateway is not None else 0}

    # ---- automats ------------------------------------------------------------------------

    async def _all_automats(self) -> list[dict[str, Any]]:
        await self.service_states()

        async def of(name: str) -> list[dict[str, Any]]:
            if name == self.ctx.name:
                return [dict(m.info(), process=name) for m in self.ctx.automats.all()]
            try:
                return list(await self.ctx.bus.call_internal(name, "automats", timeout=PING_TIMEOUT) or [])
            except NodeError:
                return []

        merged = [item for chunk in await asyncio.gather(*(of(n) for n in PYTHON_PROCESSES)) for item in chunk]
        for position, item in enumerate(merged, start=1):
            item["local_index"] = item.get("index")
            item["index"] = position
        return merged

    async def _find_automat(self, index: int | None, automat_id: str | None) -> dict[str, Any]:
        if index is None and not automat_id:
            raise InvalidArgumentError("give index or automat_id")
        for item in await self._all_automats():
            if (automat_id and item["id"] == automat_id) or (index is not None and item["index"] == index):
                return item
        raise NotFoundError("state machine was not found", reason="automat_not_found")

    @endpoint()
    async def automats_list(self) -> list[dict[str, Any]]:
        return await self._all_automats()

    @endpoint()
    async def automat_info(self, index: int | None = None, automat_id: str | None = None) -> dict[str, Any]:
        return await self._find_automat(index, automat_id)

    async def _automat_events(self, index: int | None, automat_id: str | None, enable: bool,
                              state_unchanged: bool) -> dict[str, Any]:
        item = await self._find_automat(index, automat_id)
        if item["process"] == self.ctx.name:
            machine = self.ctx.automats.get(item["id"])
            assert machine is not None
            machine.events_enabled, machine.state_unchanged_events = enable, state_unchanged
            return dict(machine.info(), process=self.ctx.name, index=item["index"])
        result = await self.ctx.bus.call_internal(item["process"], "automat_events", automat_id=item["id"],
                                                  enable=enable, state_unchanged=state_unchanged)
        return dict(result, index=item["index"])

    @endpoint()
    async def automat_events_start(self, index: int | None = None, automat_id: str | None = None,
                                   state_unchanged: bool = False) -> dict[str, Any]:
        return await self._automat_events(index, automat_id, True, state_unchanged)

    @endpoint()
    async def automat_events_stop(self, index: int | None = None, automat_id: str | None = None) -> dict[str, Any]:
        return await self._automat_events(index, automat_id, False, False)

    # ---- models --------------------------------------------------------------------------

    def model_snapshot(self, model_name: str, query_details: Any = None) -> list[tuple[str, Any]] | None:
        if model_name != "service":
            return None
        return [(name, {"name": name, "state": machine.state}) for name, machine in self.machines.items()]

    async def model_items(self, model_name: str, query_details: Any = None) -> list[dict[str, Any]]:
        """Every item of a model, from whichever process owns it."""
        if model_name == "service":
            await self.service_states()
            return [{"id": i, "data": d} for i, d in self.model_snapshot("service") or []]
        for name in PYTHON_PROCESSES:
            if name == self.ctx.name:
                continue
            try:
                items = await self.ctx.bus.call_internal(name, "models", model_name=model_name,
                                                         query_details=query_details, timeout=5)
            except NodeError:
                continue
            if items is not None:
                return list(items)
        return []
