"""report.html in a real browser: headless Chromium (Debian's package) over the DevTools protocol.

The page is opened from ``file://`` with network and console events recorded; the test checks
the expected building rows and images are shown (every thumbnail decodes), that no request
other than ``file:``/``data:`` is made, that nothing is logged as an error, and saves a
full-page screenshot. Skipped when /usr/bin/chromium is missing (``make system-deps``
installs it).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import save_oracle
from test_report import make_known_survey, process_known

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="headless browser test needs Debian's chromium (/usr/bin/chromium; make system-deps)",
)
websocket = pytest.importorskip("websocket", reason="needs websocket-client (the dev extra)")


class DevTools:
    """A minimal DevTools-protocol client: commands, and every event kept in order."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, *, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self.events.append(json.loads(self.ws.recv()))

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """Headless Chromium on a free port, one page target, torn down after the test."""
    profile = tmp_path / "profile"
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = _json_get(f"http://127.0.0.1:{port}/json/list")
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _json_get(url: str) -> Any:
    from urllib.request import urlopen

    deadline = time.monotonic() + 30
    while True:
        try:
            with urlopen(url, timeout=5) as response:  # the local DevTools endpoint only
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def evaluate(tools: DevTools, expression: str) -> Any:
    result = tools.send(
        "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
    )
    if "exceptionDetails" in result:
        raise AssertionError(result["exceptionDetails"])
    return result["result"].get("value")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The known survey processed twice, as two surveys of two districts."""
    base = tmp_path_factory.mktemp("browser")
    weights = save_oracle(base)
    return [
        process_known(make_known_survey(base / "centre"), weights).out_dir,
        process_known(make_known_survey(base / "east", district="East"), weights).out_dir,
    ]


@pytest.fixture(scope="module")
def report_path(outputs: list[Path]) -> Path:
    return outputs[0] / "report.html"


def open_page(tools: DevTools, path: Path) -> None:
    """Record network, console and log events, open ``path`` and wait for its load event."""
    for domain in ("Network", "Runtime", "Log", "Page"):
        tools.send(f"{domain}.enable")
    tools.send("Page.navigate", url=path.as_uri())
    tools.wait_for("Page.loadEventFired")


def screenshot(tools: DevTools, path: Path) -> Path:
    """A full-page PNG screenshot written to ``path``."""
    png = base64.b64decode(
        tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    )
    path.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    return path


def assert_offline_and_quiet(tools: DevTools) -> None:
    """No request other than file:/data:, nothing logged as an error, no exception."""
    requests = [
        e["params"]["request"]["url"]
        for e in tools.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    errors = [
        e
        for e in tools.events
        if (
            e.get("method") == "Runtime.consoleAPICalled"
            and e["params"]["type"] in ("error", "assert")
        )
        or e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert errors == []


def test_report_renders_in_headless_chromium(
    browser: DevTools, report_path: Path, tmp_path: Path
) -> None:
    open_page(browser, report_path)

    rows = evaluate(
        browser, "[...document.querySelectorAll('tr.building-row')].map(r => r.dataset.building)"
    )
    assert rows == ["F2", "F1", "M1", "M2", "D"]
    sections = evaluate(browser, "document.querySelectorAll('section.building').length")
    assert sections == 5
    # every thumbnail decodes to a non-empty bitmap, and is laid out with a size on screen
    sizes = evaluate(
        browser,
        """Promise.all([...document.querySelectorAll('svg image')].map(
        async i => { const im = new Image(); im.src = i.href.baseVal; await im.decode();
                     const box = i.getBoundingClientRect();
                     return [im.naturalWidth, im.naturalHeight, box.width, box.height]; }))""",
    )
    assert len(sizes) == 4
    assert all(w > 0 and h > 0 and bw > 0 and bh > 0 for w, h, bw, bh in sizes)
    assert max(max(w, h) for w, h, _, _ in sizes) <= 640
    overlays = evaluate(browser, "document.querySelectorAll('svg.overlay polyline').length")
    assert overlays == 4  # F1: 2 cracks, F2: 1, M1: 1 (M2 none)
    maps = evaluate(browser, "document.querySelectorAll('svg.map path').length")
    assert maps == 5

    screenshot(browser, tmp_path / "report.png")

    # printing lays the page out without errors either
    browser.send("Emulation.setEmulatedMedia", media="print")
    pdf = base64.b64decode(browser.send("Page.printToPDF")["data"])
    assert pdf[:4] == b"%PDF"

    assert_offline_and_quiet(browser)


def test_city_report_renders_in_headless_chromium(
    browser: DevTools, outputs: list[Path], tmp_path: Path
) -> None:
    from cracksurvey.report import write_city_report

    city = write_city_report(outputs, tmp_path / "city", merge=False)
    open_page(browser, city.report)
    rows = evaluate(
        browser,
        "[...document.querySelectorAll('tr.building-row')]"
        ".map(r => r.dataset.survey + '/' + r.dataset.building)",
    )
    assert sorted(rows) == sorted(
        f"{s}/{b}" for s in ("centre", "east") for b in ("D", "F1", "F2", "M1", "M2")
    )
    districts = evaluate(
        browser,
        "[...document.querySelectorAll('tr.district-row td:first-child')].map(c => c.textContent)",
    )
    assert districts == ["East", "centre"]
    thumbnails = evaluate(
        browser,
        """Promise.all([...document.querySelectorAll('svg image')].map(
        async i => { const im = new Image(); im.src = i.href.baseVal; await im.decode();
                     return Math.max(im.naturalWidth, im.naturalHeight); }))""",
    )
    assert len(thumbnails) == 8 and max(thumbnails) <= 360
    screenshot(browser, tmp_path / "city.png")
    assert_offline_and_quiet(browser)
