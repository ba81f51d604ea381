"""The analytics view (``/analytics``) in headless Chromium driven by selenium: it asks for the
admin key, reads ``GET /admin/analytics`` from a real server and draws the plots and tables;
shopper-typed query text is shown as text, never run as HTML.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs both); without them the
test is skipped, saying why.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import httpx
import pytest

from personalization.searchlog import write_segment
from shopsearch.service import ServiceSettings, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_driver = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no chromium + chromedriver on PATH (Debian: apt-get install -y chromium "
    "chromium-driver) to drive the page",
)
ADMIN_KEY = "page-admin-key"
HOSTILE = "<img src=x onerror=\"document.body.dataset.owned='yes'\">"
DAY = 1_796_083_200.0  # 2026-12-01T00:00:00Z


def _log(folder):
    """Six shoppers search "drill" (clicks at rank 1 and 2) and five search a hostile text."""
    rows = []
    for u in range(6):
        for day in range(2):
            sid = f"d{u}-{day}"
            t = DAY + day * 86_400 + u * 60
            rows.append(
                {"event": "search", "timestamp": t, "search_id": sid, "pseudonym": f"u{u}",
                 "session": "", "query": "drill", "offset": 0, "results": ["a", "b", "c"],
                 "relevance": [0.9, 0.5, 0.1], "personal": [0.0, 0.0, 0.0]}
            )  # fmt: skip
            if u % 2 == 0:
                rows.append(
                    {"event": "click", "timestamp": t + 5, "search_id": sid,
                     "pseudonym": f"u{u}", "product_id": "a" if day else "b",
                     "position": 1 if day else 2}
                )  # fmt: skip
    for u in range(5):
        rows.append(
            {"event": "search", "timestamp": DAY + 3600 + u, "search_id": f"h{u}",
             "pseudonym": f"u{u}", "session": "", "query": HOSTILE, "offset": 0, "results": []}
        )  # fmt: skip
    folder.mkdir()
    write_segment(folder / "20261201T000000Z-page.parquet", rows)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live(tmp_path, index_dir, tiny_factory):
    """The app on a free loopback port (uvicorn in a thread), with the log above."""
    import uvicorn

    settings = ServiceSettings(
        index=str(index_dir),
        admin_key=ADMIN_KEY,
        background_load=False,
        search_log=str(_log(tmp_path / "search-log")),
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, pipeline_factory=tiny_factory),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        pytest.fail("the test server did not start in 60 s")
    yield url
    server.should_exit = True
    thread.join(30)


@pytest.fixture()
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chromium-analytics'}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _cells(driver, table: str) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tr`)].slice(1).map((tr) => "
        "[...tr.children].map((td) => td.textContent))",
        table,
    )


@needs_driver
@pytest.mark.integration
def test_the_view_asks_for_the_key_and_draws_the_report(live, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live}/analytics")
    # a wrong key: the service's answer, and no report
    browser.find_element(By.ID, "admin_key").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: "403" in d.find_element(By.ID, "status").text)
    assert not browser.find_element(By.ID, "report").is_displayed()

    box = browser.find_element(By.ID, "admin_key")
    box.clear()
    box.send_keys(ADMIN_KEY)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "report").is_displayed())
    assert browser.find_element(By.ID, "status").text == "17 searches."

    # plots: one bar per day, the two rate lines, the curve over ranks 1-3, the histogram
    bars = browser.execute_script("return document.querySelectorAll('#plot-days rect.bar').length")
    assert bars == 2
    lines = browser.execute_script(
        "return [...document.querySelectorAll('#plot-rates polyline, #plot-curve polyline')]"
        ".map((p) => p.getAttribute('points').split(' ').length)"
    )
    assert lines == [2, 2, 3, 3]
    # tables: drill (12 searches, 6 shoppers, 6 clicked), the hostile text as plain text
    top = _cells(browser, "top-queries")
    assert top[0][:4] == ["drill", "12", "6", "50.0%"]
    assert top[1][0] == HOSTILE.lower()
    assert _cells(browser, "zero-queries")[0] == [HOSTILE.lower(), "5", "5"]
    assert browser.execute_script("return document.body.dataset.owned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#report img")

    # the key stays for the tab: a reload shows the report without asking
    browser.get(f"{live}/analytics?since=2026-12-02")
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "report").is_displayed())
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "status").text == "6 searches."
    )
