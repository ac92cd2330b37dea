"""Talking to a node's supervisord over its private unix socket (XML-RPC)."""

from __future__ import annotations

import asyncio
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from common.errors import NotFoundError, UnavailableError


class SupervisorClient:
    """Blocking calls (`*_sync`) and their async forms, run in a thread."""

    def __init__(self, socket_path: Path):
        self.socket_path = socket_path

    def _proxy(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def call_sync(self, method: str, *args: Any) -> Any:
        """Call `supervisor.<method>`; raises `UnavailableError` / `NotFoundError`."""
        try:
            return getattr(self._proxy().supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            if "BAD_NAME" in fault.faultString:
                raise NotFoundError(f"no program {args[0] if args else ''}", reason="process_not_found") from None
            if "NOT_RUNNING" in fault.faultString or "ALREADY_STARTED" in fault.faultString:
                return False
            raise UnavailableError(f"supervisord: {fault.faultString}") from None
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise UnavailableError(f"supervisord is not reachable: {exc}") from None

    async def call(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.call_sync, method, *args)

    async def processes(self) -> list[dict[str, Any]]:
        """name, pid, state and uptime of every program."""
        infos = await self.call("getAllProcessInfo")
        return [
            {
                "name": info["name"],
                "pid": info["pid"],
                "state": info["statename"],
                "uptime": max(0, info["now"] - info["start"]) if info["statename"] == "RUNNING" else 0,
                "exitstatus": info["exitstatus"],
            }
            for info in infos
        ]

    async def restart_program(self, name: str) -> None:
        """Stop (if running) then start one program; returns once it runs again."""
        await self.call("stopProcess", name, True)
        await self.call("startProcess", name, True)
