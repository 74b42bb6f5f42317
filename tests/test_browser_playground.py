"""The Playground and head pages in a real browser on the shipped demo cache (fixtures of
test_browser): a dataset prompt shows the three checkpoints' predictions, an unknown name the
error, and a click on a heatmap cell opens that head's page. Screenshots in test-artifacts/."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlparse

from test_browser import browser, page, pytestmark, server, settle, shoot  # noqa: F401

from ioi.task.names import analysis_samples

CHARTS = "[data-testid='stVegaLiteChart']"


def main_text(tab) -> str:
    return tab.inner_text("[data-testid='stMain']")


def test_a_dataset_prompt_shows_the_three_checkpoints_predictions(server, page):  # noqa: F811
    x = analysis_samples(0, 5)[4]
    page.goto(f"{server}/playground?prompt={quote(x.prompt)}", timeout=120_000)
    settle(page)
    page.wait_for_timeout(1500)
    text = main_text(page)
    for label in ("clean, pretrained", "subject duplication, epoch 3", "reversal of subject duplication, epoch 3"):
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
    heatmap = page.locator(CHARTS).nth(3)  # three next-token charts, then the first DLA heatmap
    heatmap.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    plot = heatmap.locator("canvas, svg").first.bounding_box()
    # 3 layers x 8 heads of 40 px cells at the plot's lower left (the legend sits on the right)
    page.mouse.click(plot["x"] + 48 + 7 * 40 + 20, plot["y"] + plot["height"] - 40 - 20 - 20)
    page.wait_for_url("**/head?**", timeout=60_000)
    settle(page)
    page.wait_for_timeout(1500)
    query = parse_qs(urlparse(page.url).query)
    head = query["head"][0]
    assert f"DLA of {head}" in main_text(page)
    shoot(page, "9-head-page")
