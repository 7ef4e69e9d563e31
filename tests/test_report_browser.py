"""The report in a real headless browser (Debian's chromium + chromedriver, driven by selenium):
the DOM after the scripts ran, sorting, filtering, images, console errors, a screenshot.

Skipped, with the reason, where selenium, chromium or chromedriver is missing (`.ci/run`
installs them with apt); nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from report_store import built_site

BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
DRIVERS = ("/usr/bin/chromedriver", "chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1500,1000",
)


def _which(names) -> str | None:
    for name in names:
        found = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
    )
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _which(BROWSERS), _which(DRIVERS)
    if browser is None or chromedriver is None:
        pytest.skip(
            "no headless browser: install Debian's chromium and chromium-driver "
            f"(apt-get install chromium chromium-driver); found browser={browser}, "
            f"driver={chromedriver}"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="bioprior-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(chromedriver), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"{browser} / {chromedriver} did not start: {exc.msg or exc}".splitlines()[0])
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return built_site(tmp_path_factory.getbasetemp() / "report")


def _open(driver, path: Path):
    driver.get_log("browser")  # drop messages of earlier pages
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _rows(driver) -> list[tuple[str, str]]:
    return [
        tuple(r)
        for r in driver.execute_script(
            "return Array.from(document.querySelectorAll('#leaderboard tbody tr.entry'))"
            ".filter(r => !r.hidden)"
            ".map(r => [r.dataset.submission, r.dataset.variant]);"
        )
    ]


def _column_values(driver, selector: str) -> list[float | None]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard tbody tr.entry'))"
        f".map(r => r.querySelector('{selector}')).map(td => td.dataset.v === '' ? null : "
        "parseFloat(td.dataset.v));"
    )


def _images(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => "
        "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}));"
    )


def _wait_images(driver, count: int) -> list[dict]:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: len(_images(d)) >= count and all(i["complete"] for i in _images(d))
    )
    return _images(driver)


def test_leaderboard_sorts_filters_and_has_no_console_error(driver, site, tmp_path_factory):
    from selenium.webdriver.common.by import By

    from bioprior.registry.report.pages import leaderboard

    _open(driver, site.index)
    board = leaderboard(site.report)
    assert _rows(driver) == [(r["submission"], r["variant"]) for r in board]
    assert driver.find_element(By.ID, "shown").text == "3 of 3 rows"  # the script ran
    # the page's mean over benchmarks (recomputed by the script) is the report's
    means = driver.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard td.mean'))"
        ".map(td => td.textContent);"
    )
    assert means == [r["overall"].text().replace(" ± ", "±") for r in board]

    # sort by the memorization score: highest first, a second click lowest first
    header = driver.find_element(
        By.CSS_SELECTOR, '#leaderboard tr.cols th.score[data-col="memorization"]'
    )
    header.click()
    mem = [r["cells"]["memorization"]["score"].mean for r in board]
    by_mem = [
        (r["submission"], r["variant"])
        for r, _ in sorted(zip(board, mem, strict=True), key=lambda t: -t[1])
    ]
    assert _rows(driver) == by_mem
    values = _column_values(driver, 'td.score[data-col="memorization"]')
    assert values == sorted(values, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    assert _rows(driver) == by_mem[::-1]

    # mCE: lower is better, so the first click puts the lowest first
    mce = driver.find_element(By.CSS_SELECTOR, 'th[data-col="corruption"][data-metric="mce"]')
    mce.click()
    values = _column_values(driver, 'td[data-col="corruption"][data-metric="mce"]')
    assert mce.get_attribute("aria-sort") == "ascending"
    assert values[:2] == sorted(values[:2]) and values[2] is None  # missing values last

    # sort by variant name (text)
    driver.find_element(By.CSS_SELECTOR, '#leaderboard th[data-key="variant"]').click()
    assert [v for _, v in _rows(driver)] == ["default", "sigma=0", "sigma=0.3"]

    # filter
    box = driver.find_element(By.ID, "filter")
    box.send_keys("readout")
    assert _rows(driver) == [("tiny-readout", "default")]
    assert driver.find_element(By.ID, "shown").text == "1 of 3 rows"
    box.clear()
    box.send_keys("sigma=0.3")
    assert _rows(driver) == [("tiny-noise", "sigma=0.3")]
    driver.execute_script(
        "const f = document.getElementById('filter'); f.value = '';"
        "f.dispatchEvent(new Event('input'));"
    )
    assert len(_rows(driver)) == 3

    # leave memorization out of the mean: its columns hide, the mean is recomputed
    driver.find_element(By.CSS_SELECTOR, 'input.include[value="memorization"]').click()
    assert not driver.find_element(
        By.CSS_SELECTOR, '#leaderboard td.score[data-col="memorization"]'
    ).is_displayed()
    readout = next(r for r in board if r["submission"] == "tiny-readout")
    others = [c["score"].mean for k, c in readout["cells"].items() if c and k != "memorization"]
    left = sum(x for x in others if x is not None) / len([x for x in others if x is not None])
    mean = driver.find_element(By.CSS_SELECTOR, 'tr[data-submission="tiny-readout"] td.mean')
    assert mean.text == f"{left:.3f}"

    # failed jobs are listed with their error class
    failed = driver.find_elements(By.CSS_SELECTOR, "tr.failed-job")
    assert len(failed) == 1 and "DataUnavailable" in failed[0].text
    assert _console_errors(driver) == []

    driver.find_element(By.CSS_SELECTOR, 'input.include[value="memorization"]').click()
    shot = tmp_path_factory.mktemp("screenshots") / "leaderboard.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\nleaderboard screenshot: {shot}")


def test_submission_pages_show_every_plot(driver, site, tmp_path_factory):
    from selenium.webdriver.common.by import By

    shots = tmp_path_factory.mktemp("screenshots-submissions")
    for sub in site.report.submissions:
        page = site.out / "submissions" / f"{sub.slug}.html"
        _open(driver, page)
        images = _wait_images(driver, len(site.plots[sub.name]))
        assert len(images) == len(site.plots[sub.name]) > 0
        broken = [i["src"] for i in images if i["width"] <= 0]
        assert not broken, f"{page.name}: images did not load: {broken}"
        assert driver.find_element(By.TAG_NAME, "h1").text == sub.name
        prov = driver.find_elements(By.CSS_SELECTOR, "#provenance tbody tr")
        assert len(prov) == sum(len(v.seeds) for v in sub.variants)
        assert "cpu" in prov[0].text
        assert _console_errors(driver) == []
        driver.save_screenshot(str(shots / f"{sub.slug}.png"))
    print(f"\nsubmission screenshots: {shots}")


def test_compare_page_puts_two_submissions_side_by_side(driver, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(driver, site.out / "compare.html")
    heads = [
        th.text for th in driver.find_elements(By.CSS_SELECTOR, "#compare-table tr.groups th.group")
    ]
    assert heads == ["tiny-noise", "tiny-readout"]
    variants = driver.find_elements(By.CSS_SELECTOR, "#compare-table tr.cols th")
    assert [v.text for v in variants[1:]] == ["sigma=0", "sigma=0.3", "default"]
    n = len({p.name for ps in site.plots.values() for p in ps})
    images = _wait_images(driver, 1)
    assert images and all(i["width"] > 0 for i in images)
    assert len(driver.find_elements(By.CSS_SELECTOR, "#compare-plots section.pair")) == n
    Select(driver.find_element(By.ID, "pick-b")).select_by_visible_text("tiny-noise")
    assert driver.current_url.endswith("#a=tiny-noise&b=tiny-noise")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#compare-table tr.cols th")) == 5
    assert all(i["width"] > 0 for i in _wait_images(driver, 1))
    assert _console_errors(driver) == []


def test_an_empty_store_gives_pages_without_errors(driver, tmp_path):
    from bioprior.registry.report import build_report
    from bioprior.registry.store.results import ResultStore

    ResultStore(tmp_path / "results.sqlite").close()
    out = build_report(tmp_path / "results.sqlite", tmp_path / "site").out
    for page in ("index.html", "compare.html"):
        _open(driver, out / page)
        assert _console_errors(driver) == [], page
    _open(driver, out / "index.html")
    assert _rows(driver) == []
