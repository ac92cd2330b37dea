"""`network_create` over HTTPS on the real bus: the gateway checks the server's certificate against
the system's trust store, which it reads on first use (its aiohttp contexts are made without one,
`lean.import_without_ca_store`). This test process imported aiohttp the usual way, so a fetch that
did not pass the gateway's own context would be checked against the real CA bundle and fail."""

from __future__ import annotations

import datetime
import functools
import http.server
import ipaddress
import json
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.config_store import ConfigStore
from common.errors import NotFoundError
from common.process import ProcessContext
from services.api.service import ApiService
from tests.helpers import connect


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def https_site(tmp_path):
    """An HTTPS server on loopback serving `net.json`, with a self-signed certificate."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "net.json").write_text(json.dumps({"name": "tlsnet", "identity_servers": [], "dht_seeds": []}))
    cert, key = _self_signed(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/net.json", cert
    server.shutdown()
    server.server_close()


async def _create(home, url: str) -> dict:
    bus = await connect(home, "api")
    service = ApiService(ProcessContext(name="api", home=home, bus=bus, config=ConfigStore(home.options_file)))
    try:
        return (await service.network_create(url=url)).result
    finally:
        service.event_log.close()
        await bus.close()


async def test_network_create_trusts_what_the_system_store_trusts(bus_home, https_site, monkeypatch):
    url, cert = https_site
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # this machine's trust store: our certificate only
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    assert (await _create(bus_home, url))["name"] == "tlsnet"


async def test_network_create_refuses_a_server_the_system_store_does_not_trust(bus_home, https_site):
    url, _ = https_site
    with pytest.raises(NotFoundError, match="certificate verify failed") as refused:
        await _create(bus_home, url)
    assert refused.value.reason == "network_not_found"
