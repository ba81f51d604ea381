"""The search page in headless Chromium: rendered (``--dump-dom``) and clicked (selenium).

Debian's ``chromium`` and ``chromium-driver`` (the same version; ``.ci/run`` installs both);
without them these tests are skipped, saying why.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (Debian: apt-get install -y chromium) to render the page",
)
needs_driver = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no chromium + chromedriver on PATH (Debian: apt-get install -y chromium "
    "chromium-driver) to click the page",
)


def _render(page: str, tmp_path) -> subprocess.CompletedProcess:
    """The page's DOM after headless Chromium ran its script (``--dump-dom``)."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_chromium
@pytest.mark.integration
def test_page_renders_results_in_headless_chromium(server, tmp_path):
    url, _ = server
    out = _render(f"{url}/?q=drill", tmp_path)
    dom = out.stdout
    assert 'class="result"' in dom, (out.returncode, out.stderr[-2000:], dom[-2000:])
    assert 'class="bar"' in dom and 'class="price"' in dom
    assert "results" in dom


@needs_chromium
@pytest.mark.integration
def test_page_says_why_a_filtered_page_is_empty(server, tmp_path):
    url, _ = server
    out = _render(f"{url}/?q=drill&brand=Nosuchbrand", tmp_path)
    dom = out.stdout
    assert "no product has brand 'Nosuchbrand'" in dom, (out.stderr[-2000:], dom[-2000:])
    assert 'class="result"' not in dom


@pytest.fixture()
def browser(tmp_path):
    """Headless Chromium driven by chromedriver (selenium), closed after the test."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-driven'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _answered(driver, after: int, timeout: float = 60):
    """Waits until the page has shown more than ``after`` answers; returns the count."""
    from selenium.webdriver.support.ui import WebDriverWait

    def answers(d):
        n = int(d.execute_script("return Number(document.body.dataset.answers || 0)"))
        return n if n > after else False

    return WebDriverWait(driver, timeout).until(answers)


def _shown(driver) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll('li.result')].map((li) => ({
            brand: li.querySelector('.brand').textContent,
            price: li.querySelector('.price') ? Number(li.querySelector('.price')
                .textContent.replace('$', '')) : null}))"""
    )


def _facet(driver, field: str) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll(
            `section.facet[data-field="${arguments[0]}"] input.facet-value`)].map((box) => ({
            filter: box.dataset.filter, checked: box.checked,
            label: box.parentElement.textContent.trim()}))""",
        field,
    )


@needs_driver
@pytest.mark.integration
def test_page_narrows_by_a_clicked_facet_and_sorts_by_price(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, _ = server
    browser.get(f"{url}/?q=drill")
    seen = _answered(browser, 0)
    before = _shown(browser)
    brands = _facet(browser, "brand")
    assert before and len(brands) >= 2, (before, brands)
    assert {"brand", "price", "category", "in_stock"} <= set(
        browser.execute_script(
            "return [...document.querySelectorAll('section.facet')].map((s) => s.dataset.field)"
        )
    )

    # tick the first brand: every result is of that brand, and the brand facet still offers
    # the others (disjunctive), the ticked one checked
    chosen = brands[0]
    box = browser.find_element(
        By.CSS_SELECTOR,
        f"section.facet[data-field=\"brand\"] input[data-filter='{chosen['filter']}']",
    )
    box.click()
    seen = _answered(browser, seen)
    narrowed = _shown(browser)
    name = chosen["label"].rsplit("(", 1)[0].strip()
    assert narrowed and {r["brand"].casefold() for r in narrowed} == {name.casefold()}
    after = _facet(browser, "brand")
    assert len(after) >= 2 and [b["checked"] for b in after if b["filter"] == chosen["filter"]] == [
        True
    ]

    # sort by price, low to high: the same brand, prices ascending
    Select(browser.find_element(By.ID, "sort")).select_by_value("price:asc")
    seen = _answered(browser, seen)
    ordered = _shown(browser)
    prices = [r["price"] for r in ordered if r["price"] is not None]
    assert ordered and {r["brand"].casefold() for r in ordered} == {name.casefold()}
    assert prices == sorted(prices) and len(prices) >= 2, ordered

    # and back to relevance, unticking the brand: the first page as before
    Select(browser.find_element(By.ID, "sort")).select_by_value("")
    seen = _answered(browser, seen)
    browser.find_element(
        By.CSS_SELECTOR,
        f"section.facet[data-field=\"brand\"] input[data-filter='{chosen['filter']}']",
    ).click()
    _answered(browser, seen)
    assert _shown(browser) == before


@needs_driver
@pytest.mark.integration
def test_the_search_box_asks_suggest_and_a_key_chooses_one(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, log = server
    browser.get(f"{url}/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("dri")

    def offered(d):  # the list under the box (the service may still be building: it asks again)
        return (
            d.execute_script(
                "return [...document.querySelectorAll('#suggestions li')].map((li) => li.dataset.text)"
            )
            or False
        )

    offers = WebDriverWait(browser, 60).until(offered)
    assert all(t.lower().startswith("dri") for t in offers), offers
    assert browser.execute_script("return Number(document.body.dataset.suggested || 0)") >= 1
    assert box.get_attribute("aria-expanded") == "true"
    assert "/suggest" in log.read_text()  # the service's request log

    # down, down, up: the first is active; Enter puts it in the box and searches it
    box.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_UP)
    first = browser.find_element(By.CSS_SELECTOR, "#suggestions li")
    assert first.get_attribute("aria-selected") == "true"
    box.send_keys(Keys.ENTER)
    _answered(browser, 0)
    assert box.get_attribute("value") == offers[0]
    assert browser.find_element(By.ID, "suggestions").get_attribute("hidden") is not None
    assert browser.find_elements(By.CSS_SELECTOR, "li.result")
