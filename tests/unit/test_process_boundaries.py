"""Processes do not import each other (STYLE.md): what two processes share lives in `common/`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_process_imports_another_process():
    crossings = []
    for package in sorted(p for p in SERVICES.iterdir() if (p / "__init__.py").exists()):
        for path in sorted(package.rglob("*.py")):
            for module in _imported_modules(path):
                parts = module.split(".")
                if len(parts) >= 2 and parts[0] == "services" and parts[1] != package.name:
                    crossings.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not crossings, "\n".join(crossings)
