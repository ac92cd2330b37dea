"""`/openapi.json`, generated from the method registry."""

from __future__ import annotations

import re
from typing import Any

from common.registry import Method, Param, Registry

_JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "list": "array", "str": "string"}


def _openapi_path(pattern: str) -> str:
    return re.sub(r"\(\?P<([a-z_0-9]+)>[^)]*\)", r"{\1}", pattern).lstrip("^").rstrip("$")


def _schema(param: Param) -> dict[str, Any]:
    kind = param.type
    if kind == "json":
        return {}
    if kind == "list":
        return {"type": "array", "items": {"type": "string"}}
    schema: dict[str, Any] = {"type": _JSON_TYPES.get(kind, "string")}
    if param.bounds is not None:
        schema["minimum"], schema["maximum"] = param.bounds
    return schema


def _query_params(method: Method, params: list[Param]) -> list[dict[str, Any]]:
    """Query parameters of a GET route: ours, then the reference engine's other names for them."""
    out = []
    for p in params:
        others = _names_of(method, p.name)[1:]
        item: dict[str, Any] = {"name": p.name, "in": "query", "required": p.required and not others,
                                "schema": _schema(p)}
        if p.required and others:
            item["description"] = f"required, under this name or one of: {', '.join(others)}"
        out.append(item)
    for alias, target in _aliases(method, params).items():
        out.append({"name": alias, "in": "query", "required": False, "schema": _schema(target),
                    "description": f"alias of {target.name}", "x-alias-of": target.name})
    for name, why in method.no_effect.items():
        out.append({"name": name, "in": "query", "required": False, "deprecated": True, "schema": {},
                    "description": f"accepted for reference clients, no effect: {why}"})
    return out


def _body_schema(method: Method, params: list[Param]) -> dict[str, Any]:
    """The JSON body of a non-GET route, with the reference engine's other names for parameters."""
    properties: dict[str, Any] = {p.name: _schema(p) for p in params}
    for alias, target in _aliases(method, params).items():
        properties[alias] = dict(_schema(target), description=f"alias of {target.name}",
                                 **{"x-alias-of": target.name})
    for name, why in method.no_effect.items():
        properties[name] = {"deprecated": True, "description": f"accepted for reference clients, no effect: {why}"}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [p.name for p in params if p.required]
    if required and not _aliases(method, params):
        schema["required"] = required
    elif required:
        # A required parameter may come under an alias: each one is required under one of its names.
        schema["allOf"] = [{"anyOf": [{"required": [name]} for name in _names_of(method, p.name)]} for p in params
                           if p.required]
    if method.body_param:
        schema["description"] = (f"a body that names anything else than these properties is taken whole as "
                                 f"{method.body_param}, as the reference engine does")
    return schema


def _aliases(method: Method, params: list[Param]) -> dict[str, Param]:
    by_name = {p.name: p for p in params}
    return {alias: by_name[target] for alias, target in method.aliases.items() if target in by_name}


def _names_of(method: Method, name: str) -> list[str]:
    return [name] + [alias for alias, target in method.aliases.items() if target == name]


def openapi_document(registry: Registry) -> dict[str, Any]:
    """An OpenAPI 3.0 document of every REST route."""
    paths: dict[str, Any] = {}
    for method in registry:
        for number, route in enumerate(method.routes):
            path = _openapi_path(route.pattern)
            in_path = set(route.path_params)
            operation: dict[str, Any] = {
                "operationId": f"{method.name}_{route.verb.lower()}_{number}",
                "summary": method.doc.split(". ")[0][:200],
                "tags": [method.owner],
                "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                               for name in route.path_params],
                "responses": {
                    "200": {"description": "OK envelope; every envelope, errors included, when the option "
                                           "interface/api/legacy-status-codes is on"},
                    "400": {"description": "invalid argument, or unknown_parameter: a name that is neither a "
                                           "parameter nor one of its aliases"},
                    "401": {"description": "api_secret missing"},
                    "403": {"description": "api_secret wrong"},
                    "404": {"description": "not found"},
                    "501": {"description": "not implemented yet"},
                    "503": {"description": "process unavailable"},
                },
                "security": [{"api_secret": []}],
            }
            params = [p for p in method.params if p.name not in in_path and not (
                method.name in ("config_get", "config_set") and in_path)]
            if route.verb == "GET":
                operation["parameters"] += _query_params(method, params)
            elif params:
                operation["requestBody"] = {"content": {"application/json": {"schema": _body_schema(method, params)}}}
            paths.setdefault(path, {})[route.verb.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "BitDust node API", "version": "1"},
        "servers": [{"url": "http://127.0.0.1:8180"}],
        "components": {"securitySchemes": {"api_secret": {"type": "apiKey", "in": "header", "name": "api_secret"}}},
        "paths": paths,
    }
