"""The Evolution page in a real browser on the shipped demo cache (its comparison entries):
screenshots test-artifacts/9-evolution*.png, checked against the entry read through the store."""

from __future__ import annotations

import pytest
from test_browser import ARTIFACTS, CHROMIUM, DEMO, browser, page, server, settle, shoot  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
    pytest.mark.skipif(
        not any(DEMO.glob("experiments/*/epoch-*/compare.json")), reason="no comparison cached"
    ),
]


def test_evolution_page_shows_the_shipped_clean_family(server, page):  # noqa: F811
    from ioi.runs.compare import load_comparison

    # every seed's clean run has a comparison: the longest (seed 0's, 5 checkpoints) is the story
    cached = {p.parents[1].name for p in DEMO.glob("experiments/*/epoch-*/compare.json")}
    found, exp = max(
        ((load_comparison(DEMO, e), e) for e in cached), key=lambda f: len(f[0].summary["checkpoints"])
    )
    labels = found.summary["checkpoints"]
    page.goto(f"{server}/evolution?exp={exp}", timeout=120_000)
    settle(page)
    main = page.inner_text("[data-testid='stMain']")
    assert "Evolution" in main and "Transfer faithfulness" in main
    assert f"DLA at clean, epoch {found.summary['epochs'][-1]}" in main  # in words, not labels[-1]
    assert page.locator("[data-testid='stVegaLiteChart']").count() == 5
    assert page.locator("[data-testid='stException']").count() == 0
    page.set_viewport_size({"width": 1400, "height": 4600})  # the app scrolls inside its main block
    page.wait_for_timeout(1500)
    shoot(page, "9-evolution")
    page.goto(
        f"{server}/evolution?exp={exp}&checkpoint={labels[0].replace(' ', '+')}&role=name_mover",
        timeout=120_000,
    )
    settle(page)
    assert "direct path to the logits" in page.inner_text("[data-testid='stMain']")
    shoot(page, "9-evolution-first-checkpoint")


def test_evolution_page_shows_a_toxic_lineage_and_its_recovery(server, page):  # noqa: F811
    from ioi.runs.cache import read_experiment

    reversals = [p.parents[1].name for p in DEMO.glob("experiments/*/epoch-*/recovery.json")]
    parents = [read_experiment(DEMO, r)["config"]["parent"] for r in reversals]
    found = [p for p in parents if any(DEMO.glob(f"experiments/{p}/epoch-*/compare-family.json"))]
    if not found:
        pytest.skip("no lineage comparison with recovery dynamics cached")
    # the story's family first: subject duplication, whose toxic run flips F and whose reversal climbs back
    exp = min(found, key=lambda p: read_experiment(DEMO, p)["config"]["scenario"] != "subject_duplication")
    page.set_viewport_size({"width": 1400, "height": 5200})
    page.goto(f"{server}/evolution?scope=compare-family&exp={exp}", timeout=120_000)
    settle(page)
    main = page.inner_text("[data-testid='stMain']")
    assert "Recovery dynamics" in main and "Steps to revive" in main
    assert page.locator("[data-testid='stException']").count() == 0
    # the reference checkpoint's long name ("subject duplication, pretrained …") is shown whole
    value = page.locator("[data-testid='stMetricValue']").nth(1)
    whole = "e => [e, ...e.querySelectorAll('*')].every(x => x.scrollWidth <= x.clientWidth)"
    assert value.evaluate(whole), f"the reference is cut: {value.inner_text()!r}"
    page.wait_for_timeout(1500)
    shoot(page, "9-evolution-lineage")
