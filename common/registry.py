"""The one registry of the API methods: routes, owners, parameters, types, defaults.

The 124 methods of the specification, and `queue_streams_list` of the reference engine (125).

Built from `api_methods.json` (a copy of the API specification). The gateway routes and
validates with it, `/openapi.json` is generated from it, processes learn which methods they own
from it, and the CLI lists it.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from common import codec
from common.errors import InvalidArgumentError

_NO_DEFAULT = object()
INT_LIMIT = 2**53
"""Integers and numbers beyond this are refused: JSON peers (and the bus encoder) cannot carry them."""

_HOUR = 3600
BOUNDS: dict[str, tuple[float, float]] = {
    # Waits: a client may wait long, never forever, and never a negative time.
    "timeout": (0, _HOUR), "wait_timeout": (0, _HOUR), "polling_timeout": (0, _HOUR),
    "ping_timeout": (0, 300), "message_ack_timeout": (0, 300),
    # Counts: what one call may make a node do or return.
    "attempts": (1, 20), "retries": (0, 10), "count": (0, 1000), "limit": (0, 10_000), "offset": (0, 10**9),
    "expire": (1, 7 * 24 * _HOUR), "use_cache_ttl": (0, 7 * 24 * _HOUR),
    "key_size": (1024, 8192), "layer_id": (0, 1000), "position": (0, 255), "index": (0, 10**6),
    "udp_port": (1, 65535), "dht_port": (1, 65535), "amount": (0, INT_LIMIT),
}
"""Allowed range of every numeric parameter, by name, whatever the method (shown in `/openapi.json`)."""

# Types of parameters whose default (None) does not tell.
_TYPE_HINTS: dict[str, str] = {
    "key_size": "int", "timeout": "float", "udp_port": "int", "dht_port": "int", "use_cache_ttl": "int",
    "expire": "int", "position": "int", "index": "int", "wait_timeout": "float", "polling_timeout": "float",
    "attempts": "int", "count": "int", "layer_id": "int", "offset": "int", "limit": "int", "retries": "int",
    "ping_timeout": "float", "message_ack_timeout": "float", "amount": "float", "value": "json",
    "data": "json", "query_details": "json",
}

# Names under which the reference engine's REST handlers (bitdust/interface/api_rest_http_server.py in
# bitdust-io/devel) or its documents read a parameter, mapped to our parameter name. Where one of
# our parameters has several, they are listed in the reference's order of precedence; our own name
# always wins over an alias.
_ID = ("global_id", "idurl", "id")
_TRUSTED = ("trusted_global_id", "trusted_idurl", "trusted_id")


def _names(target: str, *names: str) -> dict[str, str]:
    return {name: target for name in names}


_ALIASES: dict[str, dict[str, str]] = {
    "identity_get": {"xml_source": "include_xml_source"},
    "identity_backup": {"destination_path": "destination_filepath"},  # older reference handlers
    "identity_recover": {"private_key_local_file": "private_key_source"},  # a path: the identity reads the file
    "key_create": {"alias": "key_alias"},
    "files_list": {"uploads": "include_uploads", "downloads": "include_downloads"},
    "file_info": {"uploads": "include_uploads", "downloads": "include_downloads"},
    "files_uploads": {"running": "include_running", "pending": "include_pending"},
    "file_download_start": {"destination_folder": "destination_path", "local_path": "destination_path"},
    "shares_list": {"active": "only_active", "mine": "include_mine", "granted": "include_granted"},
    "share_grant": _names("trusted_user_id", *_TRUSTED),
    "group_info_dht": _names("group_creator_id", "group_creator_idurl", "id"),
    "group_share": {**_names("trusted_user_id", *_TRUSTED), "key_id": "group_key_id"},
    "friend_add": _names("trusted_user_id", *_ID),
    "friend_remove": _names("user_id", *_ID),
    "user_ping": _names("user_id", *_ID),
    "user_status": _names("user_id", *_ID),
    "user_status_check": _names("user_id", *_ID),
    "message_history": {"id": "recipient_id"},
    "message_send": _names("recipient_id", *_ID),
    "suppliers_list": _names("customer_id", "customer_idurl", "id"),
    "supplier_change": {**_names("position", "pos", "index"),
                        **_names("supplier_id", "supplier_idurl", "supplier_glob_id"),
                        **_names("new_supplier_id", "new_global_id", "new_idurl")},
    "suppliers_list_dht": _names("customer_id", "customer_idurl", "id"),
    "customer_reject": _names("customer_id", *_ID),
    "dht_node_find": {"dht_id": "node_id_64"},
}

# Parameters reference clients send that mean nothing here: accepted (never an `unknown_parameter`
# refusal), documented in `/openapi.json`, and not passed on.
_NO_EFFECT: dict[str, dict[str, str]] = {
    "files_sync": {"force": "every sync reads each supplier's whole listing"},
    "file_upload_start": {"open_share": "the reference handler does not read it either"},
    "file_download_start": {"open_share": "the reference handler does not read it either"},
    "message_send": {"timeout": "the reference handler does not read it either; see ping_timeout, message_ack_timeout"},
}

# The reference's event_send handler takes the whole JSON body as `data`.
_BODY_PARAM: dict[str, str] = {"event_send": "data"}

# Names every method accepts: the secret may come in the query; path segments of an option key.
_ALWAYS_ACCEPTED = frozenset({"api_secret"})
_CONFIG_KEY_PARTS = ("key1", "key2", "key3")


@dataclass(frozen=True)
class Param:
    """One parameter of an API method."""

    name: str
    type: str
    default: Any = _NO_DEFAULT

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT

    def default_value(self) -> Any:
        return None if self.required else self.default

    @property
    def bounds(self) -> tuple[float, float] | None:
        return BOUNDS.get(self.name) if self.type in ("int", "float") else None


@dataclass(frozen=True)
class Route:
    verb: str
    pattern: str

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile("^" + self.pattern.rstrip("$").lstrip("^") + "$")

    @property
    def path_params(self) -> list[str]:
        return list(self.regex.groupindex)


@dataclass(frozen=True)
class Method:
    """One API method: name, owner process, parameters, routes, doc."""

    name: str
    owner: str
    params: tuple[Param, ...]
    routes: tuple[Route, ...]
    doc: str = ""
    ws_only: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    no_effect: dict[str, str] = field(default_factory=dict)
    body_param: str | None = None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def accepted_names(self) -> list[str]:
        """Every name a request may carry for this method: parameters, aliases, names with no effect."""
        return [p.name for p in self.params] + list(self.aliases) + list(self.no_effect)

    def adopt_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request values a JSON body gives.

        For a method with a body parameter (`event_send`), a body that names anything but this
        method's parameters is itself the value of that parameter, as in the reference engine.
        """
        if self.body_param is None or not body:
            return body
        if set(body) <= {p.name for p in self.params} | _ALWAYS_ACCEPTED:
            return body
        return {self.body_param: body}

    def bind(self, raw: dict[str, Any], from_text: bool) -> dict[str, Any]:
        """Typed keyword arguments from request values; raises `InvalidArgumentError`.

        `from_text` is true for query strings and path parameters, where every value is text.
        Aliases are resolved; a name that is neither a parameter, an alias nor a known no-op is
        refused (`unknown_parameter`), and so is a missing required parameter.
        """
        given = self._resolve(raw)
        kwargs: dict[str, Any] = {}
        for param in self.params:
            if param.name not in given:
                if param.required:
                    raise InvalidArgumentError(f"parameter {param.name} is required", reason="invalid_argument")
                continue
            kwargs[param.name] = check_bounds(param, coerce(param, given[param.name], from_text))
        return kwargs

    def _resolve(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Request values under our parameter names; raises `InvalidArgumentError` on unknown names."""
        raw = {k: v for k, v in raw.items() if k not in _ALWAYS_ACCEPTED and k not in self.no_effect}
        if self.name in ("config_get", "config_set") and _CONFIG_KEY_PARTS[0] in raw:
            raw["key"] = "/".join(str(raw.pop(k)) for k in _CONFIG_KEY_PARTS if k in raw)
        own = {p.name for p in self.params}
        unknown = sorted(k for k in raw if k not in own and k not in self.aliases)
        if unknown:
            raise InvalidArgumentError(
                f"unknown parameter {', '.join(unknown)} for {self.name}; accepted: "
                f"{', '.join(self.accepted_names()) or 'none'}", reason="unknown_parameter")
        given = {k: v for k, v in raw.items() if k in own}
        # Aliases in table order: the first one given wins, and never over our own name.
        for alias, target in self.aliases.items():
            if alias in raw and target not in given:
                given[target] = raw[alias]
        return given


def coerce(param: Param, value: Any, from_text: bool) -> Any:
    """Convert one value to the parameter's type; raises `InvalidArgumentError`."""
    kind = param.type
    try:
        if value is None:
            if param.required:
                raise ValueError("null")
            return None
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            if isinstance(value, str) and value.strip() in ("", "null", "none", "None") and not param.required:
                return param.default_value()
            number = int(value)
            if not -INT_LIMIT <= number <= INT_LIMIT:
                raise ValueError(value)
            return number
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, str) and value.strip() in ("", "null", "none", "None") and not param.required:
                return param.default_value()
            real = float(value)
            if not math.isfinite(real) or abs(real) > INT_LIMIT:
                raise ValueError(value)
            return real
        if kind == "list":
            if isinstance(value, list):
                return value
            if isinstance(value, str):
                text = value.strip()
                if text.startswith("["):
                    parsed = codec.loads(text)
                    if isinstance(parsed, list):
                        return parsed
                return [part.strip() for part in text.split(",") if part.strip()]
            raise ValueError(value)
        if kind == "json":
            if from_text and isinstance(value, str):
                text = value.strip()
                if text[:1] in ("{", "[", '"') or text in ("true", "false", "null") or _is_number(text):
                    try:
                        return codec.loads(text)
                    except ValueError:
                        return value
            return value
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value) if not isinstance(value, bool) else ("true" if value else "false")
    except (ValueError, TypeError, OverflowError):
        expected = {"bool": "a boolean", "int": "an integer", "float": "a number", "list": "a list"}.get(
            kind, "a string"
        )
        raise InvalidArgumentError(
            f"parameter {param.name} must be {expected}, got {_short(value)}", reason="invalid_argument"
        ) from None


def check_bounds(param: Param, value: Any) -> Any:
    """`value` if it lies in the parameter's range (or has none); raises `InvalidArgumentError`."""
    bounds = param.bounds
    if bounds is None or value is None:
        return value
    low, high = bounds
    if not low <= value <= high:
        raise InvalidArgumentError(f"parameter {param.name} must be from {low:g} to {high:g}, got {_short(value)}",
                                   reason="invalid_argument")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _parse_signature(signature: str) -> tuple[Param, ...]:
    tree = ast.parse(f"def {signature}: pass")
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef)
    args = func.args.args
    defaults = [ast.literal_eval(d) for d in func.args.defaults]
    first_default = len(args) - len(defaults)
    params = []
    for position, arg in enumerate(args):
        default = defaults[position - first_default] if position >= first_default else _NO_DEFAULT
        params.append(Param(arg.arg, _infer_type(arg.arg, default), default))
    return tuple(params)


def _infer_type(name: str, default: Any) -> str:
    if name in _TYPE_HINTS:
        return _TYPE_HINTS[name]
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, list):
        return "list"
    return "str"


class Registry:
    """All methods, by name, with route lookup."""

    def __init__(self, methods: list[Method]):
        self.methods = {m.name: m for m in methods}
        # Most routes have no path parameters: look those up directly, not by regex.
        self._exact: dict[str, dict[str, Method]] = {}
        for method in methods:
            for route in method.routes:
                if not route.path_params:
                    self._exact.setdefault(route.pattern, {})[route.verb] = method

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.methods.values())

    def __len__(self) -> int:
        return len(self.methods)

    def get(self, name: str) -> Method | None:
        return self.methods.get(name)

    def owned_by(self, process: str) -> list[Method]:
        return [m for m in self.methods.values() if m.owner == process]

    def match(self, verb: str, path: str) -> tuple[Method, dict[str, str]] | None | bool:
        """(method, path params) for a request; False when the path exists under another verb."""
        exact = self._exact.get(path)
        if exact is not None:
            return (exact[verb], {}) if verb in exact else False
        path_known = False
        for method in self.methods.values():
            for route in method.routes:
                found = route.regex.match(path)
                if found:
                    if route.verb == verb:
                        return method, {k: v for k, v in found.groupdict().items() if v is not None}
                    path_known = True
        return False if path_known else None


@functools.lru_cache(maxsize=1)
def load() -> Registry:
    """The registry built from the packaged specification."""
    raw = json.loads(resources.files("common").joinpath("api_methods.json").read_text())
    methods = []
    for item in raw["methods"]:
        methods.append(Method(
            name=item["name"],
            owner=item["owner"],
            params=_parse_signature(item["signature"]),
            routes=tuple(Route(r["verb"], r["route"]) for r in item["routes"]),
            doc=item.get("doc", ""),
            ws_only=bool(item.get("ws_only")),
            aliases=_ALIASES.get(item["name"], {}),
            no_effect=_NO_EFFECT.get(item["name"], {}),
            body_param=_BODY_PARAM.get(item["name"]),
        ))
    return Registry(methods)
