"""The page's folder browser: what the node may read, under a few roots and nowhere else.

A path is resolved (symbolic links and `..` followed) before it is checked, so neither a `..` nor
a link pointing out of a root leads outside: such a path is refused with `path_forbidden`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from common.errors import AuthError, NotFoundError
from common.fsutil import user_path

MAX_ENTRIES = 2000


class FolderBrowser:
    """Lists folders under fixed roots (the user's home and the node's home)."""

    def __init__(self, roots: dict[str, Path]):
        self.roots = {label: path.resolve() for label, path in roots.items()}

    def list(self, path: str | None) -> dict[str, Any]:
        """The roots when `path` is empty, else the entries of one folder under a root.

        Raises:
            AuthError: `path_forbidden` when the resolved path is outside every root.
            NotFoundError: `folder_not_found` when it is not an existing folder.
            InvalidArgumentError: `invalid_path` for a path the OS cannot take.
        """
        if not path:
            return {"path": "", "parent": None,
                    "entries": [{"name": label, "path": str(root), "type": "dir", "size": 0}
                                for label, root in self.roots.items()]}
        folder = user_path(path, "path")
        root = self.root_of(folder)
        if root is None:
            raise AuthError(f"{path} is outside the folders the page may browse", reason="path_forbidden",
                            status=403)
        if not folder.is_dir():
            raise NotFoundError(f"{path} is not a folder", reason="folder_not_found")
        entries = []
        try:
            names = sorted(os.listdir(folder))[:MAX_ENTRIES]
        except OSError as err:
            raise NotFoundError(f"{path} cannot be read: {err.strerror}", reason="folder_not_found") from None
        for name in names:
            try:
                info = (folder / name).stat()
            except OSError:
                continue
            kind = "dir" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "other"
            entries.append({"name": name, "path": str(folder / name), "type": kind,
                            "size": info.st_size if kind == "file" else 0})
        parent = str(folder.parent) if folder != root else ""
        return {"path": str(folder), "parent": parent, "entries": entries}

    def root_of(self, folder: Path) -> Path | None:
        """The root a resolved path lies under, or None."""
        for root in self.roots.values():
            if folder == root or folder.is_relative_to(root):
                return root
        return None


def default_roots(node_home: Path) -> dict[str, Path]:
    """The user's home and the node's home."""
    roots = {"home": Path.home(), "node": node_home}
    return {label: path for label, path in roots.items() if path.is_dir()}

