"""The page's files: nothing inserted as HTML, no inline script or style, nothing fetched from elsewhere."""

from __future__ import annotations

import re

from services.api.ui_routes import UI_DIR, _load_static


def test_no_html_insertion_or_code_from_text() -> None:
    for path in UI_DIR.rglob("*.js"):
        text = path.read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert banned not in text, (path.name, banned)


def test_index_has_no_inline_code_and_loads_only_local_files() -> None:
    html = (UI_DIR / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="app.js">']
    assert "<style" not in html and " style=" not in html and " on" not in re.sub(r"<a [^>]*>", "", html).lower()
    for path in UI_DIR.rglob("*"):
        if path.suffix in (".js", ".html", ".css"):
            text = path.read_text().replace("http://www.w3.org/2000/svg", "")  # a namespace name, never fetched
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), path.name


def test_every_imported_module_is_served() -> None:
    served = _load_static(UI_DIR)
    for name, (body, _) in served.items():
        if not name.endswith(".js"):
            continue
        folder = name.rsplit("/", 1)[0] if "/" in name else ""
        for target in re.findall(r"from '([^']+)'", body.decode()):
            parts = [p for p in (folder + "/" + target).split("/") if p and p != "."]
            resolved: list[str] = []
            for part in parts:
                if part == "..":
                    resolved.pop()
                else:
                    resolved.append(part)
            assert "/".join(resolved) in served, (name, target)
