"""The dashboard's time to first chart: from `streamlit run` to the first Altair chart drawn in a
headless Chromium, on the shipped demo cache (what a user of a fresh clone sees).

    PYTHONPATH=. python benchmarks/dashboard.py [page]      # page: url path, default "attribution"
"""

from __future__ import annotations

import sys
import tempfile
import time

from tests.dashboard_support import CHROMIUM, FLAGS, start_streamlit

CHART = "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg"


def first_chart_seconds(page: str = "attribution", timeout: float = 120.0) -> float:
    """Seconds from launching the server to the first chart of `page` being visible."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        start = time.perf_counter()
        server, url = start_streamlit({"IOI_CACHE_DIR": tmp})
        try:
            tab = browser.new_page()
            while True:  # the server is not listening yet
                try:
                    tab.goto(f"{url}/{page}", timeout=timeout * 1000)
                    break
                except Exception:
                    if time.perf_counter() - start > timeout:
                        raise
                    time.sleep(0.1)
            tab.wait_for_selector(CHART, state="visible", timeout=timeout * 1000)
            return time.perf_counter() - start
        finally:
            server.terminate()
            server.wait()
            browser.close()


if __name__ == "__main__":
    page = sys.argv[1] if len(sys.argv) > 1 else "attribution"
    print(f"dashboard, page /{page}: first chart after {first_chart_seconds(page):.1f} s from launch")
