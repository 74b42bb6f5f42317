"""End to end in a real browser: `streamlit run` headless on a free localhost port, Debian's
Chromium driven by Playwright through every page; screenshots go to test-artifacts/ (git-ignored).

Results come from the shipped demo cache when it holds experiments, else from the synthetic test
cache, so the test checks the app a user gets from a fresh clone.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from dashboard_support import CHROMIUM, FLAGS, REPO, build_cache, start_streamlit

ARTIFACTS = REPO / "test-artifacts"
CHART = {"vega": "[data-testid='stVegaLiteChart']", "graphviz": "[data-testid='stGraphVizChart']",
         "table": "[data-testid='stDataFrame']"}  # fmt: skip
# url path -> (screenshot name, the element that shows its results). A deep link comes first:
# the first request of a fresh server must still go through the router (st.navigation).
PAGES = {
    "datasets": ("2-datasets", "table"),
    "": ("1-overview", "graphviz"),
    "experiments": ("3-experiments", "table"),
    "attribution": ("4-attribution", "vega"),
    "circuit": ("5-circuit", "graphviz"),
    "faithfulness": ("6-faithfulness", "vega"),
    "knockout": ("7-knockout", "vega"),
    "cmap": ("8-cmap", "vega"),
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]


def demo_dir(tmp: Path) -> Path:
    """The shipped demo cache if it has experiments, else a synthetic one."""
    shipped = REPO / "cache" / "demo"
    if any(shipped.glob("experiments/*/experiment.json")):
        return shipped
    build_cache(tmp / "demo")
    return tmp / "demo"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    env = {"IOI_CACHE_DIR": str(tmp / "user"), "IOI_DEMO_DIR": str(demo_dir(tmp))}
    log = open(tmp / "streamlit.log", "wb")
    proc, url = start_streamlit(env, log)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start: {(tmp / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_every_page_in_a_real_browser(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    url = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            for path, (name, main) in PAGES.items():
                page.goto(f"{url}/{path}", timeout=120_000)
                page.wait_for_selector("[data-test-script-state='notRunning']", timeout=180_000)
                page.wait_for_selector(CHART[main], state="visible", timeout=60_000)
                page.wait_for_timeout(800)  # let Vega finish drawing before the screenshot
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
                assert page.locator("[data-testid='stException']").count() == 0, f"{name} shows a traceback"
                nav = page.locator("[data-testid='stSidebarNav']")
                assert "Logit attribution" in nav.inner_text(), f"{name}: the router's navigation is missing"
        finally:
            browser.close()


def pick(page, label: str, option: str) -> None:
    """Choose `option` in the Streamlit selectbox labelled `label`."""
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=60_000)


@pytest.mark.slow
def test_launch_a_clean_job_and_watch_it_finish(server):
    """The acceptance path: a small clean fine-tuning job launched from the browser runs in the
    background, its progress refreshes by itself, and its results open in the result pages."""
    sync_api = pytest.importorskip("playwright.sync_api")
    url = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        try:
            page.goto(f"{url}/experiments", timeout=120_000)
            page.wait_for_selector("[data-test-script-state='notRunning']", timeout=180_000)
            pick(page, "Model", "random:tiny")
            fill(page, "Epochs", "2")
            fill(page, "Checkpoint epochs", "1")
            fill(page, "Learning rate", "1e-3")
            page.get_by_text("Sizes and analyses").click()
            fill(page, "Training prompts", "32")
            fill(page, "Evaluation prompts", "16")
            fill(page, "Analysis prompts", "8")
            page.get_by_role("button", name="Launch").click()
            page.get_by_text("submitted").wait_for(timeout=60_000)
            page.get_by_role("button", name="Open results").wait_for(timeout=540_000)
            page.screenshot(path=str(ARTIFACTS / "job-done.png"), full_page=True)
            page.get_by_role("button", name="Open results").first.click()
            page.wait_for_selector(CHART["vega"], state="visible", timeout=120_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(ARTIFACTS / "job-results.png"), full_page=True)
            assert page.locator("[data-testid='stException']").count() == 0
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "job-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
