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


def test_a_module_imported_without_the_ca_store_trusts_nothing_and_later_contexts_load_it(tmp_path):
    (tmp_path / "tls_at_import.py").write_text("import ssl\nCONTEXT = ssl.create_default_context()\n")
    out = _run(f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        os.environ.pop("SSL_CERT_FILE", None)
        os.environ["SSL_CERT_DIR"] = "/etc/ssl/certs"
        from common import lean
        lean.import_without_ca_store("tls_at_import")
        import tls_at_import
        print(tls_at_import.CONTEXT.cert_store_stats()["x509_ca"], os.environ.get("SSL_CERT_FILE"),
              os.environ["SSL_CERT_DIR"])
        lean.import_without_ca_store("aiohttp")  # as the API gateway does: it makes contexts at import
        import aiohttp.connector
        print(aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"])
        import ssl
        print(ssl.create_default_context().cert_store_stats()["x509_ca"] > 0)  # made after: the CAs
    """)
    assert out.splitlines() == ["0 None /etc/ssl/certs", "0", "True"]
