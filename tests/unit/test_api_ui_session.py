"""The page's login tokens, sessions and CSRF tokens, the Host rule and the folder browser's roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.errors import AuthError, NotFoundError
from services.api.folders import FolderBrowser
from services.api.ui_session import SESSION_TTL, TOKEN_TTL, UiSessions, is_loopback_host, ui_origins


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_logs_in_once() -> None:
    sessions = UiSessions(Clock())
    token = sessions.issue_token()
    found = sessions.redeem(token)
    assert found is not None
    session_id, session = found
    assert sessions.session(session_id) is session
    assert sessions.redeem(token) is None


def test_an_old_token_is_refused() -> None:
    clock = Clock()
    sessions = UiSessions(clock)
    token = sessions.issue_token()
    clock.now += TOKEN_TTL + 0.001
    assert sessions.redeem(token) is None


def test_sessions_expire_and_end() -> None:
    clock = Clock()
    sessions = UiSessions(clock)
    found = sessions.redeem(sessions.issue_token())
    assert found is not None
    session_id, _ = found
    clock.now += SESSION_TTL - 1
    assert sessions.session(session_id) is not None
    clock.now += 2
    assert sessions.session(session_id) is None
    found = sessions.redeem(sessions.issue_token())
    assert found is not None
    sessions.end(found[0])
    assert sessions.session(found[0]) is None
    assert sessions.session("made-up") is None and sessions.session(None) is None


def test_csrf_check() -> None:
    sessions = UiSessions(Clock())
    found = sessions.redeem(sessions.issue_token())
    assert found is not None
    session = found[1]
    assert sessions.csrf_problem(session, session.csrf) is None
    assert sessions.csrf_problem(session, None) == "csrf_missing"
    assert sessions.csrf_problem(session, session.csrf + "x") == "csrf_wrong"


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8180", True), ("localhost:8180", True), ("LOCALHOST", True), ("[::1]:8180", True),
    ("127.0.0.2:8180", True), ("evil.example:8180", False), ("127.0.0.1.evil.example", False), ("", False),
    (None, False), ("10.0.0.1:8180", False), ("[::1", False),
])
def test_host_must_be_loopback(host: str | None, ok: bool) -> None:
    assert is_loopback_host(host) is ok


def test_origins_are_the_rest_port_only() -> None:
    origins = ui_origins(8180)
    assert "http://127.0.0.1:8180" in origins and "http://localhost:8180" in origins
    assert "http://127.0.0.1:8280" not in origins and "null" not in origins


def test_folder_browser_stays_under_its_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("a")
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "escape")
    browser = FolderBrowser({"node": root})
    assert [e["name"] for e in browser.list("")["entries"]] == ["node"]
    listing = browser.list(str(root / "sub"))
    assert listing["entries"] == [{"name": "a.txt", "path": str(root / "sub" / "a.txt"), "type": "file", "size": 1}]
    assert listing["parent"] == str(root)
    for path in (str(root / ".." / "outside"), str(root / "escape"), "/etc", str(tmp_path)):
        with pytest.raises(AuthError) as err:
            browser.list(path)
        assert err.value.reason == "path_forbidden"
    with pytest.raises(NotFoundError):
        browser.list(str(root / "sub" / "a.txt"))
