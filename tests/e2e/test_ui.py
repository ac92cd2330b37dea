"""The node's web page in a real headless Chromium: log in by the one-time URL, every view, an upload
watched to 100%, a download compared byte for byte, redundancy shown, a message pushed without a
reload, and no console errors.

Debian's `chromium` and `chromium-driver` are driven by Selenium pointed at both binaries (nothing is
downloaded at run time; `scripts/setup.sh` installs them). One browser session serves every test of
the module. A screenshot of each view is saved under $BITDUST_UI_SCREENSHOTS, or else a pytest
temporary folder (its path is printed).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from deploy import cli_open
from tests.e2e.client import NodeClient
from tests.helpers import sha256_file, wait_for

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = "/usr/bin/chromedriver"
PROGRAMS = ("api", "bus", "dht", "identity", "messaging", "storage", "transport")
DEADLINE = 90.0


def _chromium() -> str | None:
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Page:
    """The browser, its console log and where screenshots go."""

    def __init__(self, driver: Any, shots: Path):
        self.driver = driver
        self.shots = shots
        self.console: list[dict[str, Any]] = []

    def wait(self, predicate: Callable[[Any], Any], what: str, timeout: float = DEADLINE) -> Any:
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(lambda d: _quiet(predicate, d))
        except TimeoutException:
            self.shot(f"timeout-{len(list(self.shots.glob('timeout-*')))}")
            shown = self.driver.execute_script("return document.body ? document.body.innerText : ''")
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; url {self.driver.current_url}; "
                                 f"page text {shown[:1500]!r}; console {self.errors()}") from None

    def text(self, css: str) -> str:
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""

    def view(self, name: str, ready_css: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", f"#/{name}")
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, f"main[data-view='{name}'] {ready_css}"),
                  f"the {name} view")

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def errors(self) -> list[dict[str, Any]]:
        self.console.extend(self.driver.get_log("browser"))
        return [entry for entry in self.console if entry.get("level") == "SEVERE"]


def _quiet(predicate: Callable[[Any], Any], driver: Any) -> Any:
    try:
        return predicate(driver)
    except WebDriverException:
        return False  # an element replaced while being read: look again


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("BITDUST_UI_SCREENSHOTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of the page: {folder}")
    return folder


@pytest.fixture(scope="module")
def page(shots: Path) -> Iterator[Page]:
    binary = _chromium()
    if binary is None or not os.access(CHROMEDRIVER, os.X_OK):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them as root)")
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never fetch a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(DEADLINE)
    try:
        yield Page(driver, shots)
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def owner(localnet_nodes, identities) -> NodeClient:
    """The node whose page is open: the last one, with its suppliers connected."""
    localnet_nodes.wait_healthy()
    client = localnet_nodes.nodes[-1]

    def connected() -> bool:
        items = client.ok("suppliers_list")
        return bool(items) and all(item["supplier_state"] == "CONNECTED" for item in items)

    wait_for(connected, timeout=120, interval=0.5, what="the page node's suppliers CONNECTED")
    return client


@pytest.fixture(scope="module")
def logged_in(page: Page, owner: NodeClient, identities) -> Page:
    url = cli_open.login_url(owner.home)
    page.driver.get(url)
    page.wait(lambda d: d.current_url == f"http://127.0.0.1:{owner.api_port}/ui/", "the token to leave the URL")
    page.driver.execute_script("window.sameDocument = 'still here'")
    return page


def test_dashboard_shows_the_real_identity_and_programs(logged_in: Page, owner: NodeClient, identities) -> None:
    page = logged_in
    global_id = identities[owner.name]["global_id"]
    page.wait(lambda d: page.text("#global-id") == global_id, "the global id")
    page.wait(lambda d: page.text("#link-state") == "connected", "the WebSocket")
    states = {p["name"]: p["state"] for p in owner.ok("process_info")["processes"]}
    for program in PROGRAMS:
        shown = page.text(f"#programs tr[data-program='{program}'] .program-state")
        assert shown == states[program] == "RUNNING", (program, shown)
    assert page.text("#network-state") == "yes"
    assert page.driver.get_cookies()[0]["httpOnly"] is True
    assert page.driver.execute_script("return document.cookie") == ""  # HttpOnly: the page's script cannot read it
    page.shot("dashboard")
    assert page.errors() == []


def test_upload_download_and_redundancy(logged_in: Page, owner: NodeClient, identities) -> None:
    page = logged_in
    folder = owner.home.root / "ui-test"
    folder.mkdir(exist_ok=True)
    source = folder / "upload.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    name = f"ui/{uuid.uuid4().hex[:8]}.bin"
    remote = f"master${identities[owner.name]['global_id']}:{name}"
    page.view("files", "#upload-form")
    page.driver.find_element(By.ID, "upload-browse").click()
    for entry in ("node", "ui-test", "upload.bin"):
        page.wait(lambda d, e=entry: d.find_elements(By.CSS_SELECTOR, f".browser button[data-name='{e}']"),
                  f"{entry} in the folder browser")[0].click()
    assert page.driver.find_element(By.ID, "upload-local").get_attribute("value") == str(source)
    box = page.driver.find_element(By.ID, "upload-remote")
    box.clear()
    box.send_keys(name)
    page.driver.find_element(By.ID, "upload-start").click()
    bar = f".transfer[data-kind='upload'][data-transfer='{remote}']"
    page.wait(lambda d: page.text(f"{bar} .transfer-state") == "ready", "the upload to finish", timeout=180)
    assert d_value(page, f"{bar} progress") == "100" and page.text(f"{bar} .progress-text") == "100%"
    page.shot("files-uploaded")

    page.wait(lambda d: d.find_elements(By.CSS_SELECTOR, f"li[data-remote-path='{remote}'] button.file-name"),
              "the file in the catalog tree")[0].click()
    suppliers = len(owner.ok("suppliers_list"))
    held = ", ".join(str(i) for i in range(suppliers))
    page.wait(lambda d: f"held at positions {held}" in page.text("#versions .redundancy"), "the redundancy")
    assert page.text("#versions .version-state") == "ready"
    target = owner.home.root / "ui-download"
    dest = page.driver.find_element(By.ID, "download-dest")
    dest.send_keys(str(target))
    page.driver.find_element(By.ID, "download-start").click()
    down = f".transfer[data-kind='download'][data-transfer='{remote}']"
    page.wait(lambda d: page.text(f"{down} .transfer-state") == "ready", "the download to finish", timeout=180)
    got = target / name.split("/")[-1]
    wait_for(got.exists, timeout=30, interval=0.2, what="the downloaded file")
    assert sha256_file(got) == sha256_file(source)
    page.shot("files")
    assert page.errors() == []


def d_value(page: Page, css: str) -> str:
    return str(page.driver.find_element(By.CSS_SELECTOR, css).get_attribute("value"))


def test_a_message_appears_without_a_reload(logged_in: Page, owner: NodeClient, identities, localnet_nodes) -> None:
    page = logged_in
    page.view("messages", "#message-feed")
    sender = localnet_nodes.nodes[0]
    # Server data is inserted as text: markup in a peer's message shows as written and runs nothing.
    marker = f"hello from the other node {uuid.uuid4().hex[:8]} <b>bold</b><img src=x onerror=\"window.pwned=1\">"
    sender.ok("message_send", recipient_id=identities[owner.name]["global_id"], data={"message": marker})
    page.wait(lambda d: marker in page.text("#message-feed"), "the pushed message")
    assert page.driver.execute_script("return window.sameDocument") == "still here"
    assert not page.driver.find_elements(By.CSS_SELECTOR, "#message-feed b, #message-feed img")
    assert page.driver.execute_script("return window.pwned") is None
    page.shot("messages")
    assert page.errors() == []


@pytest.mark.parametrize("view, ready", [
    ("suppliers", "#suppliers tr[data-position]"), ("shares", "section"), ("network", "#dht-state"),
    ("events", "#event-list li"), ("settings", "#settings .config-group"), ("identity", "#backup-form"),
    ("dashboard", "#traffic-chart rect.bar-out"),
])
def test_every_view_renders(logged_in: Page, view: str, ready: str) -> None:
    page = logged_in
    page.view(view, ready)
    page.shot(view if view != "dashboard" else "dashboard-after-transfers")
    assert page.errors() == []


def test_identity_backup_clears_the_reminder(logged_in: Page, owner: NodeClient) -> None:
    page = logged_in
    page.view("identity", "#backup-form")
    assert not page.driver.find_element(By.ID, "reminder").get_attribute("hidden")
    page.driver.find_element(By.ID, "backup-browse").click()
    page.wait(lambda d: d.find_elements(By.CSS_SELECTOR, ".browser button[data-name='node']"),
              "the node's home in the folder browser")[0].click()
    page.wait(lambda d: page.text(".browser .browser-path") == str(owner.home.root.resolve()), "the node's home")
    page.driver.find_element(By.CSS_SELECTOR, ".browser .browser-choose").click()
    name = page.driver.find_element(By.ID, "backup-name")
    name.clear()
    name.send_keys("ui-identity-backup.key")
    page.driver.find_element(By.ID, "backup-start").click()
    page.wait(lambda d: d.find_element(By.ID, "reminder").get_attribute("hidden") is not None, "the reminder to go")
    backup = owner.home.root.resolve() / "ui-identity-backup.key"
    assert backup.read_text().startswith(owner.ok("identity_get")["idurl"] + "\n-----BEGIN")
    page.shot("identity-backed-up")
    assert page.errors() == []


def test_logout_ends_the_session(logged_in: Page) -> None:
    page = logged_in
    page.driver.find_element(By.ID, "logout").click()
    page.wait(lambda d: d.find_elements(By.ID, "login-needed"), "the logged-out page")
    page.driver.refresh()
    page.wait(lambda d: d.find_elements(By.ID, "login-needed"), "the logged-out page after a reload")
