"""`common.lean`: skipped, deferred and lean-imported modules, each checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_deferred_module_loads_on_first_use_only():
    out = _run("""
        import sys
        from common import lean
        lean.defer("colorsys")
        import colorsys
        before = type(sys.modules["colorsys"]).__name__
        value = colorsys.rgb_to_hsv(1.0, 0.0, 0.0)
        print(before, type(sys.modules["colorsys"]).__name__, value[0])
    """)
    assert out == "_Deferred module 0.0"


def test_a_deferred_package_still_imports_its_submodules():
    out = _run("""
        import sys
        from common import lean
        lean.defer("xml.dom")
        from xml.dom import minidom
        print(minidom.parseString("<a/>").documentElement.tagName, "xml.dom.minidom" in sys.modules)
    """)
    assert out == "a True"


def test_a_skipped_module_cannot_be_imported():
    out = _run("""
        from common import lean
        lean.skip("colorsys")
        try:
            import colorsys
        except ImportError:
            print("refused")
    """)
    assert out == "refused"


def test_the_bus_client_imports_without_aiohttp_and_leaves_it_importable():
    out = _run("""
        import sys
        from common import lean
        lean.import_bus_client()
        import nats
        lean_import = "aiohttp" not in sys.modules and type(sys.modules["nats.js"]).__name__
        import aiohttp.web  # the process may still use it for its own HTTP
        print(lean_import, "aiohttp" in sys.modules)
    """)
    assert out == "_Deferred True"
