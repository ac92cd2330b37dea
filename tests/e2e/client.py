"""A small REST client for end-to-end tests: one per node of a local network."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import codec, registry
from common.home import NodeHome
from deploy import netns


@dataclass
class NodeClient:
    """Calls one node's REST API with its secret."""

    name: str
    home: NodeHome
    api_port: int
    ws_port: int
    secret: str
    address: str = "127.0.0.1"
    """Where other nodes reach this one (its namespace's address in a `--netns` network)."""

    @classmethod
    def from_listing(cls, item: dict[str, Any]) -> "NodeClient":
        return cls(item["name"], NodeHome(Path(item["home"])), item["api_port"], item["ws_port"], item["api_secret"],
                   item.get("address", "127.0.0.1"))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ws_url(self) -> str:
        return f"http://127.0.0.1:{self.ws_port}/"

    def request(self, verb: str, route: str, body: Any = None, params: dict[str, Any] | None = None,
                secret: str | None = "", timeout: float = 60) -> tuple[int, dict[str, Any]]:
        """(HTTP status, decoded envelope); `secret=None` sends no secret.

        A node in a network namespace is called from a thread inside that namespace.
        """
        namespace = netns.namespace_of(self.home.run)
        if namespace:
            return netns.in_namespace(namespace, self._request, verb, route, body, params, secret, timeout)
        return self._request(verb, route, body, params, secret, timeout)

    def _request(self, verb: str, route: str, body: Any, params: dict[str, Any] | None, secret: str | None,
                 timeout: float) -> tuple[int, dict[str, Any]]:
        url = self.base + route
        if params:
            url += "?" + urllib.parse.urlencode({k: _text(v) for k, v in params.items()})
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["api_secret"] = secret or self.secret
        data = codec.dumps(body) if body is not None else None
        req = urllib.request.Request(url, data=data, method=verb, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, codec.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, codec.loads(err.read())

    def get(self, route: str, **params: Any) -> tuple[int, dict[str, Any]]:
        return self.request("GET", route, params=params)

    def call(self, method_name: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """Call an API method by name through its first REST route."""
        method = registry.load().get(method_name)
        assert method is not None and method.routes, method_name
        route = next((r for r in method.routes if not r.path_params), method.routes[0])
        path = route.pattern
        for name in route.path_params:
            path = path.replace(f"(?P<{name}>[^/]+)", urllib.parse.quote(str(kwargs.pop(name)), safe=""))
        if route.verb == "GET":
            return self.request("GET", path, params=kwargs)
        return self.request(route.verb, path, body=kwargs)

    def ok(self, method_name: str, **kwargs: Any) -> Any:
        """Call and assert success; return `result`."""
        status, doc = self.call(method_name, **kwargs)
        assert status == 200 and doc["status"] == "OK", (method_name, status, doc)
        return doc.get("result")

    def maps(self, program: str) -> str:
        """What one of the node's processes has mapped (`/proc/<pid>/maps`): which libraries it loaded."""
        pids = {p["name"]: p["pid"] for p in self.ok("process_info")["processes"]}
        return Path(f"/proc/{pids[program]}/maps").read_text()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return codec.dumps(value).decode()
    return str(value)
