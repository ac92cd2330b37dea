"""Option values of one node, persisted atomically as JSON under `<home>/config/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import codec
from common.config_schema import GROUPS, OPTIONS, option, validate
from common.fsutil import atomic_write


class ConfigStore:
    """The values that differ from the defaults, read from and written to one file."""

    def __init__(self, path: Path):
        self.path = path
        self._values: dict[str, Any] = {}
        self.reload()

    def reload(self) -> None:
        """Re-read the file (another process may have changed it)."""
        try:
            raw = codec.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError):
            raw = {}
        self._values = {k: v for k, v in raw.items() if k in OPTIONS} if isinstance(raw, dict) else {}

    def get(self, key: str) -> Any:
        opt = option(key)
        return self._values.get(opt.key, opt.default)

    def set(self, key: str, value: Any) -> Any:
        """Validate, persist, return the typed value; raises `InvalidArgumentError`/`NotFoundError`."""
        typed = validate(key, value)
        self._values[option(key).key] = typed
        self.save()
        return typed

    def set_many(self, values: dict[str, Any]) -> None:
        """Validate every value first, then persist them together."""
        typed = {option(k).key: validate(k, v) for k, v in values.items()}
        self._values.update(typed)
        self.save()

    def save(self) -> None:
        atomic_write(self.path, codec.dumps(dict(sorted(self._values.items()))), mode=0o600)

    def describe(self, key: str, include_info: bool = False) -> dict[str, Any]:
        found = option(key)
        described = found.describe(self.get(key))
        if include_info:
            described["info"] = found.help()
        return described

    def keys(self, sort: bool = False) -> list[str]:
        return sorted(OPTIONS) if sort else list(OPTIONS)

    def tree(self, include_info: bool) -> dict[str, Any]:
        """Options nested by path segments, as `configs_tree` shows them."""
        root: dict[str, Any] = {group: {} for group in GROUPS}
        for key in OPTIONS:
            node = root
            *parents, leaf = key.split("/")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = self.describe(key, include_info)
        return root
