"""End to end in a real browser: `streamlit run` headless on a free localhost port over the shipped
demo cache, Debian's Chromium driven by Playwright, checking page by page what a person would see.
Screenshots of every page and tour step go to test-artifacts/ (git-ignored).

What each check compares against comes from the cache itself, read through the store, so the test
holds when the demo cache is regenerated.
"""

from __future__ import annotations

import time
import urllib.request
from urllib.parse import urlparse

import pytest
from dashboard_support import CHROMIUM, FLAGS, REPO, start_streamlit

ARTIFACTS = REPO / "test-artifacts"
DEMO = REPO / "cache" / "demo"
CHART = {"vega": "[data-testid='stVegaLiteChart']", "graphviz": "[data-testid='stGraphVizChart']",
         "table": "[data-testid='stDataFrame']"}  # fmt: skip
# url path -> (screenshot name, the element that shows its results). A deep link comes first:
# the first request of a fresh server must still go through the router (st.navigation).
PAGES = {
    "datasets": ("2-datasets", "table"),
    "findings": ("0-findings", "vega"),
    "": ("1-overview", "vega"),
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
    pytest.mark.skipif(not any(DEMO.glob("experiments/*/experiment.json")), reason="no shipped demo cache"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    env = {"IOI_CACHE_DIR": str(tmp / "user"), "IOI_DEMO_DIR": str(DEMO)}
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


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    """A fresh tab that records every request it makes (`tab.requests`)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    tab = context.new_page()
    tab.requests = []
    tab.on("request", lambda r: tab.requests.append(r.url))
    yield tab
    context.close()


def settle(tab, main: str = "vega") -> None:
    tab.wait_for_selector("[data-test-script-state='notRunning']", timeout=180_000)
    tab.wait_for_selector(CHART[main], state="visible", timeout=60_000)
    tab.wait_for_timeout(900)  # let Vega finish drawing before a screenshot


def shoot(tab, name: str) -> None:
    """The whole page: Streamlit scrolls its main area inside the window, so a full-page screenshot
    of the window would stop at its bottom; the window is made as tall as the content first."""
    size = tab.viewport_size
    tall = tab.evaluate(
        "() => Math.max(...['stMain', 'stAppViewContainer', 'stAppScrollToBottomContainer'].map("
        "id => document.querySelector(`[data-testid='${id}']`)?.scrollHeight || 0))"
    )
    if tall > size["height"]:
        tab.set_viewport_size({"width": size["width"], "height": int(tall) + 40})
        tab.wait_for_timeout(700)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    tab.set_viewport_size(size)


def clean_run_id() -> str:
    from ioi.runs.catalog import list_experiments

    runs = [e for e in list_experiments(DEMO) if e.config["scenario"] == "clean"]
    return max(runs, key=lambda e: e.config["epochs"]).id


def test_every_page_in_a_real_browser_and_no_request_leaves_localhost(server, page):
    for path, (name, main) in PAGES.items():
        page.goto(f"{server}/{path}", timeout=120_000)
        settle(page, main)
        shoot(page, name)
        assert page.locator("[data-testid='stException']").count() == 0, f"{name} shows a traceback"
        nav = page.locator("[data-testid='stSidebarNav']")
        assert "Logit attribution" in nav.inner_text(), f"{name}: the router's navigation is missing"
        assert "/work/" not in page.inner_text("body") and "/home/" not in page.inner_text("body"), name
    hosts = {
        urlparse(u).hostname for u in page.requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
    }
    assert hosts <= {"127.0.0.1", "localhost"}, f"requests left localhost: {hosts}"


def test_findings_page_shows_the_three_findings_with_their_verdicts(server, page):
    page.goto(f"{server}/findings", timeout=120_000)
    settle(page)
    main = page.inner_text("[data-testid='stMain']")
    for finding in ("Amplification", "Localized corruption", "Neuroplasticity"):
        assert finding in main
    assert any(word in main for word in ("holds", "does not hold", "undetermined"))
    shoot(page, "0-findings-top")
    # The open reversal's tab shows its edge-level verdict with a link to its Evolution view.
    edges = page.get_by_text("At the level of edges").first
    edges.scroll_into_view_if_needed()
    assert edges.is_visible()
    assert page.get_by_text("the edge circuit's revival").first.is_visible()
    links = page.locator("a[href*='evolution'][href*='scope=compare-family']")
    assert links.count() >= 1 and links.first.is_visible()
    shoot(page, "0-findings-edge-revival")


def test_circuit_page_lists_the_pretrained_models_name_movers(server, page):
    from ioi.runs.cache import load_analysis

    circuit = load_analysis(DEMO, clean_run_id(), 0, "faithfulness").summary["circuit"]
    movers = circuit["classes"]["name mover"]
    assert movers, "the demo cache's pretrained model has name movers"
    page.goto(f"{server}/circuit", timeout=120_000)
    settle(page, "graphviz")
    text = page.inner_text("[data-testid='stMain']")
    assert "pretrained" in text
    table = page.locator("[data-testid='stDataFrame']").first.inner_text()
    graph = page.locator(CHART["graphviz"]).first.inner_text()
    for head in movers:
        assert head in graph or head in table, f"name mover {head} is not shown"


def test_no_two_experiment_labels_in_a_picker_are_equal(server, page):
    for path in ("attribution", "knockout", "cmap", "circuit"):
        page.goto(f"{server}/{path}", timeout=120_000)
        settle(page, "graphviz" if path == "circuit" else "vega")
        box = page.locator("[data-testid='stSelectbox']").filter(has_text="Experiment").first
        box.click()
        options = page.get_by_role("option").all_inner_texts()
        page.keyboard.press("Escape")
        assert len(options) >= 2 and len(set(options)) == len(options), (path, options)
        if path != "knockout":  # the demo set has per-head knockouts on the first seed's clean run only
            assert any(o.startswith("reversal of ") for o in options), options


def test_a_reversal_is_labelled_by_its_lineage_and_starts_from_the_toxic_model(server, page):
    from ioi.runs.catalog import list_experiments

    runs = list_experiments(DEMO)
    toxic = {e.id: e.config["scenario"] for e in runs}
    reversal = next(e for e in runs if e.config["scenario"] == "reversal" and e.config.get("parent") in toxic)
    page.goto(f"{server}/cmap?exp={reversal.id}", timeout=120_000)
    settle(page)
    main = page.inner_text("[data-testid='stMain']")
    lineage = toxic[reversal.config["parent"]].replace("_", " ")
    assert f"reversal of {lineage}" in main and "toxic model this reversal starts from" in main
    shoot(page, "8b-cmap-reversal")


def test_a_url_copied_from_a_view_reproduces_it(server, page, browser):
    page.goto(f"{server}/attribution", timeout=120_000)
    settle(page)
    page.get_by_text("side by side", exact=True).click()
    page.wait_for_timeout(500)
    settle(page)
    box = page.locator("[data-testid='stSelectbox']").filter(has_text="Experiment A").first
    box.click()
    page.get_by_role("option").filter(has_text="subject duplication").first.click()
    page.wait_for_timeout(500)
    settle(page)
    url = page.url
    assert "mode=side" in url and "compare=" in url
    before = page.locator("[data-testid='stMetric']").all_inner_texts()
    shoot(page, "4b-attribution-side-by-side")
    other = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        other.goto(url, timeout=120_000)
        settle(other)
        assert other.locator("[data-testid='stMetric']").all_inner_texts() == before
        assert other.locator(CHART["vega"]).count() == 2
        assert other.url == url
    finally:
        other.close()


def test_every_tour_step_shows_a_chart(server, page):
    page.goto(f"{server}/", timeout=120_000)
    settle(page)
    step = 1
    while True:
        progress = page.locator("[data-testid='stProgress']").first.inner_text()
        assert f"Step {step} of" in progress
        page.locator("[data-testid='stProgress']").first.scroll_into_view_if_needed()
        assert page.locator(CHART["vega"]).count() >= 1, f"tour step {step} shows no chart"
        shoot(page, f"tour-{step}")
        nxt = page.get_by_role("button", name="Next")
        if nxt.is_disabled():
            break
        nxt.click()
        page.wait_for_timeout(500)
        settle(page)
        step += 1
    assert step >= 6


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
def test_launch_a_clean_job_and_watch_it_finish(server, page):
    """The acceptance path: a small clean fine-tuning job launched from the browser runs in the
    background, its progress refreshes by itself, and its results open in the result pages."""
    try:
        page.goto(f"{server}/experiments", timeout=120_000)
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
        page.wait_for_selector("[data-test-script-state='notRunning']", timeout=60_000)
        page.wait_for_timeout(500)  # the rerun that refreshed the cached experiments has drawn
        shoot(page, "job-done")
        page.get_by_role("button", name="Open results").first.click()
        page.wait_for_selector(CHART["vega"], state="visible", timeout=120_000)
        page.wait_for_timeout(800)
        shoot(page, "job-results")
        assert page.locator("[data-testid='stException']").count() == 0
    except Exception:
        shoot(page, "job-failure")
        raise
