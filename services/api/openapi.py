"""`/openapi.json`, generated from the method registry."""

from __future__ import annotations

import re
from typing import Any

from common.registry import Registry

_JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "list": "array", "str": "string"}


def _openapi_path(pattern: str) -> str:
    return re.sub(r"\(\?P<([a-z_0-9]+)>[^)]*\)", r"{\1}", pattern).lstrip("^").rstrip("$")


def _schema(kind: str) -> dict[str, Any]:
    if kind == "json":
        return {}
    if kind == "list":
        return {"type": "array", "items": {"type": "string"}}
    return {"type": _JSON_TYPES.get(kind, "string")}


def openapi_document(registry: Registry) -> dict[str, Any]:
    """An OpenAPI 3.0 document of every REST route."""
    paths: dict[str, Any] = {}
    for method in registry:
        for route in method.routes:
            path = _openapi_path(route.pattern)
            in_path = set(route.path_params)
            operation: dict[str, Any] = {
                "operationId": f"{method.name}_{route.verb.lower()}_{len(paths.get(path, {}))}",
                "summary": method.doc.split(". ")[0][:200],
                "tags": [method.owner],
                "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                               for name in route.path_params],
                "responses": {
                    "200": {"description": "OK envelope"},
                    "400": {"description": "invalid argument"},
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
                operation["parameters"] += [
                    {"name": p.name, "in": "query", "required": p.required, "schema": _schema(p.type)} for p in params
                ]
            elif params:
                operation["requestBody"] = {"content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {p.name: _schema(p.type) for p in params},
                    "required": [p.name for p in params if p.required] or None,
                }}}}
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                if schema["required"] is None:
                    del schema["required"]
            paths.setdefault(path, {})[route.verb.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "BitDust node API", "version": "1"},
        "servers": [{"url": "http://127.0.0.1:8180"}],
        "components": {"securitySchemes": {"api_secret": {"type": "apiKey", "in": "header", "name": "api_secret"}}},
        "paths": paths,
    }
