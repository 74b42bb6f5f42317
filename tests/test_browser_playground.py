"""The Playground and head pages in a real browser on the shipped demo cache (fixtures of
test_browser): a dataset prompt shows the three checkpoints' predictions, an unknown name the
error, and a click on a heatmap cell opens that head's page. Screenshots in test-artifacts/."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlparse

from test_browser import browser, page, pytestmark, server, settle, shoot  # noqa: F401

from ioi.task.names import analysis_samples

CHARTS = "[data-testid='stVegaLiteChart']"


def tall(tab) -> None:
    """A viewport as tall as the page: Streamlit scrolls inside its own container, so a full-page
    screenshot shows only the viewport."""
    tab.set_viewport_size({"width": 1400, "height": 3400})


def main_text(tab) -> str:
    return tab.inner_text("[data-testid='stMain']")


def test_a_dataset_prompt_shows_the_three_checkpoints_predictions(server, page):  # noqa: F811
    x = analysis_samples(0, 5)[4]
    tall(page)
    page.goto(f"{server}/playground?prompt={quote(x.prompt)}", timeout=120_000)
    settle(page)
    page.wait_for_timeout(1500)
    text = main_text(page)
    for label in (
        "clean, pretrained",
        "subject duplication, epoch 3",
        "reversal of subject duplication, epoch 3",
    ):
        assert label in text, label
    metrics = page.locator("[data-testid='stMetricValue']").all_inner_texts()
    assert metrics[1::2] == [x.io, x.s, x.io], metrics  # "predicts" after each logit difference
    shoot(page, "9-playground")


def test_an_unknown_name_shows_the_error(server, page):  # noqa: F811
    prompt = "When Mary and Zorblax went to the store, Mary gave a drink to"
    page.goto(f"{server}/playground?prompt={quote(prompt)}", timeout=120_000)
    page.wait_for_selector("[data-testid='stAlertContentError']", timeout=180_000)
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=180_000)
    error = page.inner_text("[data-testid='stAlertContentError']")
    assert "not in this model's vocabulary: Zorblax" in error
    shoot(page, "9-playground-unknown-name")


def test_clicking_a_heatmap_cell_opens_that_heads_page(server, page):  # noqa: F811
    page.goto(f"{server}/playground", timeout=120_000)
    settle(page)
    page.wait_for_timeout(1500)
    heatmap = page.locator(CHARTS).nth(1)  # the next-token panels, then the DLA heatmaps
    heatmap.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    box = heatmap.bounding_box()
    # the first panel (pretrained), right of the layer axis, below the panel's header: 26 px wide
    # cells (three panels), 40 px rows (120 px for three layers): head 4 of layer 1
    page.mouse.click(box["x"] + 52 + 4 * 26 + 13, box["y"] + 20 + 40 + 20)
    for _ in range(240):  # the address bar changes once the head page has run
        if page.evaluate("location.pathname").endswith("/head"):
            break
        page.wait_for_timeout(500)
    settle(page)
    page.wait_for_timeout(1500)
    query = parse_qs(urlparse(page.evaluate("location.href")).query)
    assert query["head"] == ["1.4"] and query["epoch"] == ["0"], query
    assert "DLA of 1.4 — clean, pretrained" in main_text(page)
    tall(page)
    page.wait_for_timeout(2500)
    shoot(page, "9-head-page")
