"""The web page's way in, attacked over plain HTTP on a real node: tokens, cookie, CSRF, Host, Origin.

Each refusal is checked on REST and, where it applies, on the WebSocket port too.
"""

from __future__ import annotations

import http.client
import subprocess
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest

from common import codec
from deploy.node import PROJECT_DIR
from tests.e2e.client import NodeClient

EVIL = "http://evil.example"


def _http(client: NodeClient, verb: str, path: str, headers: dict[str, str] | None = None,
          body: Any = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", client.api_port, timeout=30)
    try:
        data = codec.dumps(body) if body is not None else None
        sent = {"Content-Type": "application/json", **(headers or {})}
        if "Host" in sent:
            conn.putrequest(verb, path, skip_host=True)
            for key, value in sent.items():
                conn.putheader(key, value)
            conn.putheader("Content-Length", str(len(data or b"")))
            conn.endheaders(data)
        else:
            conn.request(verb, path, body=data, headers=sent)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _reason(body: bytes) -> str:
    return str(codec.loads(body).get("reason"))


def _token(client: NodeClient) -> str:
    status, _, body = _http(client, "POST", "/ui/token", {"api_secret": client.secret}, {})
    assert status == 200, body
    return str(codec.loads(body)["result"]["token"])


class Login:
    """A browser session got the way the page gets it."""

    def __init__(self, client: NodeClient):
        self.client = client
        status, headers, body = _http(client, "GET", f"/ui/?token={_token(client)}")
        assert status == 303 and headers["location"] == "/ui/", (status, body)
        self.set_cookie = headers["set-cookie"]
        jar = SimpleCookie(self.set_cookie)
        self.name = f"bitdust_ui_{client.api_port}"
        self.session_id = jar[self.name].value
        status, _, body = _http(client, "GET", "/ui/session", {"Cookie": self.cookie})
        assert status == 200, body
        self.csrf = str(codec.loads(body)["result"]["csrf"])

    @property
    def cookie(self) -> str:
        return f"{self.name}={self.session_id}"

    def headers(self, csrf: bool = True, **extra: str) -> dict[str, str]:
        found = {"Cookie": self.cookie, **extra}
        if csrf:
            found["X-CSRF-Token"] = self.csrf
        return found


@pytest.fixture(scope="module")
def login(localnet_nodes) -> Login:
    localnet_nodes.wait_healthy()
    return Login(localnet_nodes.nodes[0])


def test_login_cookie_is_httponly_strict_and_the_token_leaves_the_url(login: Login) -> None:
    attrs = login.set_cookie.lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    status, _, body = _http(login.client, "GET", "/process/health/v1", login.headers())
    assert status == 200 and codec.loads(body)["status"] == "OK"
    status, _, body = _http(login.client, "POST", "/config/set/v1", login.headers(Origin=f"http://127.0.0.1:"
                                                                                  f"{login.client.api_port}"),
                            {"key": "logs/debug-level", "value": 0})
    assert status == 200, body


def test_a_token_needs_the_api_secret(net) -> None:
    client = net.nodes[0]
    status, _, body = _http(client, "POST", "/ui/token", {}, {})
    assert (status, _reason(body)) == (401, "unauthorized")
    login = Login(client)
    status, _, body = _http(client, "POST", "/ui/token", login.headers(), {})
    assert (status, _reason(body)) == (401, "unauthorized")


def test_no_cookie_is_refused(net) -> None:
    client = net.nodes[0]
    for path in ("/ui/session", "/ui/folders", "/process/health/v1"):
        status, _, body = _http(client, "GET", path)
        assert (status, _reason(body)) == (401, "unauthorized"), path
    status, _, body = _http(client, "GET", "/process/health/v1", {"Cookie": f"bitdust_ui_{client.api_port}=forged",
                                                                  "X-CSRF-Token": "forged"})
    assert (status, _reason(body)) == (401, "unauthorized")


def test_a_reused_or_made_up_token_is_refused(net) -> None:
    client = net.nodes[0]
    token = _token(client)
    status, headers, _ = _http(client, "GET", f"/ui/?token={token}")
    assert status == 303 and "set-cookie" in headers
    for attempt in (token, "made-up-token", ""):
        status, headers, body = _http(client, "GET", f"/ui/?token={attempt}")
        assert status == 403 and "set-cookie" not in headers, (attempt, body)


def test_a_missing_or_wrong_csrf_header_is_refused(login: Login) -> None:
    client = login.client
    before = client.ok("network_status")["network_connector_state"]
    for verb, path, body in (("POST", "/config/set/v1", {"key": "logs/debug-level", "value": 0}),
                             ("GET", "/network/disconnect/v1", None), ("GET", "/ui/folders", None)):
        status, _, answer = _http(client, verb, path, login.headers(csrf=False), body)
        assert (status, _reason(answer)) == (403, "csrf_missing"), path
        status, _, answer = _http(client, verb, path, login.headers(csrf=False, **{"X-CSRF-Token": "nope"}), body)
        assert (status, _reason(answer)) == (403, "csrf_wrong"), path
    status, _, answer = _http(client, "POST", "/ui/logout", login.headers(csrf=False))
    assert status == 403
    # The GET that would have disconnected the node was refused before it ran.
    assert client.ok("network_status")["network_connector_state"] == before


def test_a_forged_origin_is_refused(login: Login) -> None:
    client = login.client
    for headers in (login.headers(Origin=EVIL), {"api_secret": client.secret, "Origin": EVIL},
                    login.headers(Origin="null"), login.headers(Origin=f"http://127.0.0.1:{client.ws_port}")):
        status, _, body = _http(client, "POST", "/config/set/v1", headers, {"key": "logs/debug-level", "value": 0})
        assert (status, _reason(body)) == (403, "origin_forbidden"), headers


def test_a_foreign_host_is_refused(login: Login) -> None:
    client = login.client
    for path in ("/process/health/v1", "/ui/", "/ui/session", f"/ui/?token={_token(client)}"):
        for headers in ({"api_secret": client.secret}, login.headers()):
            status, _, body = _http(client, "GET", path, dict(headers, Host=f"evil.example:{client.api_port}"))
            assert (status, _reason(body)) == (403, "host_forbidden"), path
    status, _, body = _http(client, "GET", "/process/health/v1", {"api_secret": client.secret,
                                                                  "Host": f"localhost:{client.api_port}"})
    assert status == 200


async def _ws(client: NodeClient, query: str, headers: dict[str, str]) -> Any:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(f"http://127.0.0.1:{client.ws_port}/{query}", headers=headers,
                                          timeout=aiohttp.ClientWSTimeout(ws_close=10)) as sock:
                await sock.send_str(codec.dumps({"command": "api_call", "method": "process_health",
                                                 "call_id": "x"}).decode())
                reply = codec.loads((await sock.receive(timeout=30)).data)
                return reply["payload"]["response"]["status"]
        except aiohttp.WSServerHandshakeError as err:
            return err.status


async def test_the_websocket_takes_the_session_only_from_the_page(login: Login) -> None:
    client = login.client
    page = f"http://127.0.0.1:{client.api_port}"
    good = f"?csrf={login.csrf}"
    assert await _ws(client, good, {"Cookie": login.cookie, "Origin": page}) == "OK"
    assert await _ws(client, "", {"api_secret": client.secret}) == "OK"
    assert await _ws(client, good, {"Cookie": login.cookie, "Origin": EVIL}) == 403
    assert await _ws(client, good, {"Cookie": login.cookie}) == 403
    assert await _ws(client, "", {"Cookie": login.cookie, "Origin": page}) == 403
    assert await _ws(client, "?csrf=wrong", {"Cookie": login.cookie, "Origin": page}) == 403
    assert await _ws(client, good, {"Origin": page}) == 401
    assert await _ws(client, good, {"Cookie": login.cookie, "Origin": page,
                                    "Host": f"evil.example:{client.ws_port}"}) == 403
    assert await _ws(client, "", {"api_secret": client.secret, "Host": f"evil.example:{client.ws_port}"}) == 403


def test_the_page_is_served_with_a_strict_policy(net) -> None:
    client = net.nodes[0]
    status, headers, body = _http(client, "GET", "/ui/")
    assert status == 200 and b'<script type="module" src="app.js">' in body
    policy = headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
    assert f"connect-src 'self' ws://127.0.0.1:{client.ws_port};" in policy
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    status, headers, _ = _http(client, "GET", "/ui/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    for path in ("/ui/../gateway.py", "/ui/%2e%2e/gateway.py", "/ui/ui_routes.py", "/ui/nope.js"):
        status, _, _ = _http(client, "GET", path)
        assert status == 404, path


def test_folder_browser_lists_the_roots_and_refuses_the_rest(login: Login) -> None:
    client = login.client
    status, _, body = _http(client, "GET", "/ui/folders", login.headers())
    roots = {e["name"]: e["path"] for e in codec.loads(body)["result"]["entries"]}
    assert status == 200 and roots["node"] == str(client.home.root.resolve())
    status, _, body = _http(client, "GET", f"/ui/folders?path={roots['node']}/..", login.headers())
    assert (status, _reason(body)) == (403, "path_forbidden")
    status, _, body = _http(client, "GET", "/ui/folders?path=/proc/self", {"api_secret": client.secret})
    assert (status, _reason(body)) == (403, "path_forbidden")


def test_logout_ends_the_session(net) -> None:
    client = net.nodes[0]
    login = Login(client)
    status, _, _ = _http(client, "POST", "/ui/logout", login.headers())
    assert status == 200
    status, _, body = _http(client, "GET", "/process/health/v1", login.headers())
    assert (status, _reason(body)) == (401, "unauthorized")


def test_bitdust_open_prints_a_one_time_url(net) -> None:
    client = net.nodes[0]
    done = subprocess.run([str(PROJECT_DIR / ".venv/bin/bitdust"), "--home", str(client.home.root), "open",
                           "--print-url"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    prefix = f"http://127.0.0.1:{client.api_port}/ui/?token="
    assert url.startswith(prefix) and client.secret not in url
    status, _, _ = _http(client, "GET", url[len(f"http://127.0.0.1:{client.api_port}"):])
    assert status == 303
    status, _, _ = _http(client, "GET", url[len(f"http://127.0.0.1:{client.api_port}"):])
    assert status == 403
