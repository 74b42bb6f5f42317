"""The dashboard's speed as a newcomer meets it, against a bare Streamlit app measured in the same run:

- cold start: from `streamlit run` to the first Altair chart drawn in a headless Chromium, for the
  dashboard on the shipped demo cache and for a bare app that draws one Altair chart; the ratio is
  the number to watch (target ≤ 1.5);
- warm page switch: from a click in the sidebar to the next page's chart (target < 1 s), on the
  server that has drawn its first chart: each page's first visit in the session, then a return visit;
- live analyses: each analysis a page runs live on the bundled model, as the page calls it
  (`app_pages._live.live_analysis`: 100 evaluation prompts, path patching 50), the model loaded and
  the batches made once, as on a page after its first run; wall and CPU seconds (target < 2 s idle);
- the machine's load average, printed with each run (on a shared machine it sets the numbers);
- with --playground, a prompt on the Playground: the bundled model's checkpoints answering a newly
  typed prompt (models loaded), the same prompt again (cached per checkpoint and prompt), and the
  computation alone (`ioi.methods.prompt.read_prompt`, in this process; target < 1 s idle), split
  into the page's script (as the browser saw it run, and alone under AppTest) and the browser's
  drawing (its main thread's long tasks; "settled": the last one over).

    PYTHONPATH=. python benchmarks/dashboard.py [--page PATH] [--repeats N] [--playground] [--live-only]
        [--playground-only] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.dashboard_support import CHROMIUM, FLAGS, REPO, start_streamlit

CHART = "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg"
BARE = """import altair as alt
import pandas as pd
import streamlit as st

st.altair_chart(alt.Chart(pd.DataFrame({"x": [1, 2, 3], "y": [1, 3, 2]})).mark_line().encode(x="x", y="y"))
"""
SWITCHES = ("Logit attribution", "Faithfulness", "Knockout", "Cross-model patching", "Circuit")


def _open(tab, url: str, start: float, timeout: float) -> None:
    while True:  # the server is not listening yet
        try:
            tab.goto(url, timeout=timeout * 1000)
            return
        except Exception:
            if time.perf_counter() - start > timeout:
                raise
            time.sleep(0.05)


def cold_start(browser, launch, path: str, timeout: float = 120.0) -> tuple[float, object, object]:
    """Seconds from `launch()` (which starts a server: (process, url)) to the first chart of
    `path`; returns (seconds, the open tab, the server process)."""
    start = time.perf_counter()
    server, url = launch()
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    _open(tab, f"{url}/{path}", start, timeout)
    tab.wait_for_selector(CHART, state="visible", timeout=timeout * 1000)
    return time.perf_counter() - start, tab, server


def page_switches(tab, timeout: float = 60.0) -> list[float]:
    """Seconds from a click on each sidebar link of `SWITCHES` to that page's chart (or diagram)."""
    out = []
    for title in SWITCHES:
        start = time.perf_counter()
        tab.locator("[data-testid='stSidebarNav']").get_by_text(title, exact=True).click()
        tab.wait_for_selector(f"h1:has-text('{title}')", timeout=timeout * 1000)
        tab.wait_for_selector("[data-test-script-state='notRunning']", timeout=timeout * 1000)
        tab.wait_for_selector(f"{CHART}, [data-testid='stGraphVizChart'] svg", state="visible",
                              timeout=timeout * 1000)  # fmt: skip
        out.append(time.perf_counter() - start)
    return out


WATCH = """() => {
  if (window.__pg) return;
  window.__pg = {states: [], long: [], key: 0};
  const root = document.querySelector('[data-test-script-state]');
  new MutationObserver(() => window.__pg.states.push([performance.now(),
      root.getAttribute('data-test-script-state')])).observe(root, {attributes: true});
  new PerformanceObserver(list => list.getEntries().forEach(
      e => window.__pg.long.push([e.startTime, e.startTime + e.duration]))).observe({type: 'longtask'});
  document.addEventListener('keydown', () => { window.__pg.key = performance.now(); }, true);
}"""
"""Records in the tab the last keystroke, when the script starts and stops running (Streamlit's
script-state attribute) and every long task (> 50 ms) of the browser's main thread."""
DRAWN = """want => new Promise(resolve => {
  const check = () => {
    const shown = [...document.querySelectorAll("[data-testid='stMetricValue']")]
      .map(e => e.innerText).filter((_, i) => i % 2 == 1);
    const idle = document.querySelector("[data-test-script-state='notRunning']");
    if (JSON.stringify(shown) == JSON.stringify(want) && idle)
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now())));
    else setTimeout(check, 4);
  };
  check();
})"""
"""Resolves, on the tab's clock, at the first frame painted after the predictions `want` are on
screen and the script has stopped (the page's last messages are in)."""
SPLIT = """drawn => {
  const t0 = window.__pg.key;
  const ran = window.__pg.states.filter(s => s[0] >= t0);
  const start = (ran.find(s => s[1] == 'running') || [t0])[0];
  const stop = (ran.filter(s => s[1] == 'notRunning').pop() || [t0])[0];
  const long = window.__pg.long.filter(l => l[1] >= t0);
  return {drawn: Math.max(drawn, ...long.map(l => l[1])) - t0, script: stop - start,
          busy: long.reduce((a, l) => a + l[1] - Math.max(l[0], t0), 0),
          busy_after: long.reduce((a, l) => a + Math.max(0, l[1] - Math.max(l[0], stop)), 0)};
}"""
"""For the last keystroke (t0): when the page was drawn (`DRAWN`, or the end of a later long
task: Vega drawing), the script's run as the browser saw it (first "running" to last
"notRunning"), and the main thread's time in long tasks (all, and those after the script)."""


def _answered(tab, prompt: str, want: list[str], timeout: float) -> dict[str, float]:
    """Seconds, on the tab's clock, from the keystroke that submits `prompt` to the Playground to
    its predictions `want` on screen and every chart drawn ("drawn"), with the split (`SPLIT`);
    "wall": the same on this process's clock as Playwright sees it (the measure before 2 Dec,
    which adds Playwright's round trips)."""
    tab.evaluate(WATCH)
    box = tab.locator("textarea").first
    box.fill(prompt)
    start = time.perf_counter()
    box.press("Control+Enter")
    drawn = tab.evaluate(DRAWN, want)
    tab.wait_for_selector(CHART, state="visible", timeout=timeout * 1000)
    wall = time.perf_counter() - start
    tab.wait_for_timeout(1500)  # long tasks still to come are the page's drawing
    split = tab.evaluate(SPLIT, drawn)
    return {"wall": wall, **{k: v / 1000 for k, v in split.items()}}


def playground(
    browser, env: dict[str, str], rounds: int = 5, timeout: float = 120.0
) -> dict[str, list[dict[str, float]]]:
    """Playground timings on the default checkpoints (pretrained, subject duplication, its
    reversal): a new prompt typed (`rounds` different ones), then each typed again; per prompt
    the `_answered` split."""
    from ioi.task.names import analysis_samples

    samples = analysis_samples(0, 2 + rounds)[2:]
    _, tab, server = cold_start(browser, lambda: start_streamlit(env), "playground", timeout)
    tab.wait_for_selector("[data-test-script-state='notRunning']", timeout=timeout * 1000)
    tab.wait_for_timeout(2000)
    out: dict[str, list[dict[str, float]]] = {"new prompt": [], "same prompt again": []}
    for key, repeat in (("new prompt", samples), ("same prompt again", samples)):
        for x in repeat:
            out[key].append(_answered(tab, x.prompt, [x.io, x.s, x.io], timeout))
    stop(server, tab)
    return out


def script_only(env: dict[str, str], rounds: int = 5) -> dict[str, list[float]]:
    """Seconds of the Playground's script alone (AppTest, no browser) on the default checkpoints:
    `rounds` new prompts, then each again (models loaded and the page run once first)."""
    import logging

    from streamlit.testing.v1 import AppTest

    from ioi.task.names import analysis_samples

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    os.environ.update(env)
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=300)
    at.switch_page("app_pages/playground.py")
    at.run()
    out: dict[str, list[float]] = {"new prompt": [], "same prompt again": []}
    samples = analysis_samples(0, 2 + rounds)[2:]
    for key in out:
        for x in samples:
            at.text_area(key="pg_prompt").input(x.prompt)
            start = time.perf_counter()
            at.run()
            out[key].append(time.perf_counter() - start)
            if at.exception or at.error:
                raise RuntimeError(f"the Playground failed on {x.prompt!r}")
    return out


def report_playground(times: dict[str, list[dict[str, float]]], script: dict[str, list[float]]) -> None:
    """Print the Playground's medians: end to end, and its split."""
    for key, rows in times.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"playground, {key} on 3 checkpoints of the bundled model ({len(rows)} prompts): "
              f"keystroke to drawn median {med['drawn']:.2f} s (max {max(r['drawn'] for r in rows):.2f} s; "
              f"{med['wall']:.2f} s on Playwright's clock); script as the browser saw it "
              f"{med['script']:.2f} s, browser main thread busy {med['busy']:.2f} s "
              f"({med['busy_after']:.2f} s after the script); "
              f"script alone (AppTest) {statistics.median(script[key]):.2f} s")  # fmt: skip


def compute_only(rounds: int = 20, threads: int = 1) -> list[float]:
    """Seconds of `read_prompt` on the bundled model (loaded) on `threads` torch threads (the
    Playground uses 1), one new evaluation prompt each time."""
    import torch

    from ioi.methods.prompt import prompt_batch, read_prompt
    from ioi.models.load import load_model
    from ioi.task.names import analysis_samples

    torch.set_num_threads(threads)
    model = load_model("ioi-tiny", device="cpu")
    out = []
    for x in analysis_samples(1, rounds + 1):
        start = time.perf_counter()
        read_prompt(model, prompt_batch(model, x.prompt, x.io, x.s))
        out.append(time.perf_counter() - start)
    return out[1:]  # the first pays one-time warm-up


LIVE = (  # (what, analysis, options, prompts, compared with a second model): as the pages run them
    ("knockout: classes + chosen heads", "knockout", {"ablation": "mean-by-template", "heads": ["1.7"],
                                                      "per_head": False}, 100, False),
    ("CMAP output, END", "cmap", {"mode": "output", "positions": "end", "direction": "a<-b", "n_boot": 200},
     100, True),
    ("CMAP pattern, END", "cmap", {"mode": "pattern", "positions": "end", "direction": "a<-b", "n_boot": 200},
     100, True),
    ("CMAP pattern, every position", "cmap", {"mode": "pattern", "positions": "all", "direction": "a<-b",
                                              "n_boot": 200}, 100, True),
    ("path patching step 1 (logits)", "path-patch", {"receiver": "logits", "heads": None, "position": "end"},
     50, False),
    ("path patching step 2 (name-mover q)", "path-patch", {"receiver": "q", "heads": "1.7 1.5",
                                                           "position": "end"}, 50, False),
    ("attention scores", "attention", {}, 100, False),
)  # fmt: skip


def live_analyses(model: str = "ioi-tiny") -> list[tuple[str, float, float]]:
    """(what, wall s, CPU s) of each analysis of `LIVE` on `model`, as its page calls it; the first
    call (the circuit classified on the batches, shared by the later ones) is timed on its own."""
    import json
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # bare mode: no session, caches still work
    from app_pages import _live

    _live.loaded_model(model, "cpu", 0)
    out = []
    for size in sorted({s for *_, s, _ in LIVE}):
        _live.batches(model, size, 0, 0)
    for what, name, options, size, pair in LIVE:
        _live.live_analysis.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        opts = json.dumps(options, sort_keys=True)
        _live.live_analysis(model, name, opts, size=size, other_name=model if pair else None)
        out.append((what if out else f"{what} (first: classifies the circuit)", time.perf_counter() - wall,
                    time.process_time() - cpu))  # fmt: skip
    return out


def first_chart_seconds(page: str = "") -> float:
    """One cold start of the dashboard on the demo cache: seconds to its first chart
    (`benchmarks/run.py --dashboard`)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        env = {"IOI_CACHE_DIR": str(Path(tmp) / "user"), "IOI_DEMO_DIR": str(REPO / "cache" / "demo")}
        seconds, tab, server = cold_start(browser, lambda: start_streamlit(env), page)
        stop(server, tab)
        browser.close()
    return seconds


def bare_launch(folder: Path):
    script = folder / "bare_app.py"
    script.write_text(BARE)

    def launch():
        proc, url = start_streamlit({}, script=script)
        return proc, url

    return launch


def stop(server: subprocess.Popen, tab) -> None:
    tab.close()
    server.terminate()
    server.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--page", default="", help="url path of the dashboard page opened first (default: Overview)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="cold starts of each app (median reported)")
    parser.add_argument("--playground", action="store_true", help="also time a prompt on the Playground")
    parser.add_argument("--live-only", action="store_true", help="time only the live analyses")
    parser.add_argument("--playground-only", action="store_true", help="time only the Playground")
    parser.add_argument("--rounds", type=int, default=5, help="new prompts typed into the Playground")
    args = parser.parse_args(argv)
    print(f"load average (1 min) before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.playground_only:
        args.playground, args.repeats = True, 0
    for what, wall, cpu in () if args.playground_only else live_analyses():
        print(f"live {what}: {wall:.2f} s wall, {cpu:.2f} s CPU (target < 2 s on an idle machine)")
    if args.live_only:
        return
    if not CHROMIUM.exists():
        sys.exit("error: /usr/bin/chromium is not installed; the benchmark drives a real browser")
    from playwright.sync_api import sync_playwright

    bare, dash, first, again = [], [], [], []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        env = {"IOI_CACHE_DIR": str(Path(tmp) / "user"), "IOI_DEMO_DIR": str(REPO / "cache" / "demo")}
        if args.playground:
            script = script_only(env, args.rounds)
            load.append(os.getloadavg()[0])
            times = playground(browser, env, args.rounds)
            load.append(os.getloadavg()[0])
            report_playground(times, script)
            print(f"load average (1 min) during the Playground: {min(load):.1f}–{max(load):.1f}")
            for threads in (1, 2):
                values = compute_only(threads=threads)
                print(f"read_prompt alone on ioi-tiny, {threads} thread(s): median "
                      f"{1000 * statistics.median(values):.0f} ms, max {1000 * max(values):.0f} ms "
                      f"({len(values)} prompts; target < 1 s)")  # fmt: skip
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            seconds, tab, server = cold_start(browser, bare_launch(Path(tmp)), "")
            bare.append(seconds)
            stop(server, tab)
            seconds, tab, server = cold_start(browser, lambda: start_streamlit(env), args.page)
            dash.append(seconds)
            first += page_switches(tab)
            again += page_switches(tab)
            stop(server, tab)
            load.append(os.getloadavg()[0])
        browser.close()
    if not bare:
        return
    b, d = statistics.median(bare), statistics.median(dash)
    print(f"bare Streamlit app, one Altair chart: first chart after {b:.2f} s (median of {len(bare)})")
    print(f"dashboard /{args.page}: first chart after {d:.2f} s (median of {len(dash)})")
    print(f"cold-start ratio dashboard / bare app: {d / b:.2f} (target ≤ 1.5)")
    for name, times in (("first visit", first), ("return visit", again)):
        print(f"warm page switch, {name}: median {statistics.median(times):.2f} s, max {max(times):.2f} s "
              f"over {len(times)} switches (target < 1 s)")  # fmt: skip
    print(f"load average (1 min) during the runs: {min(load):.1f}–{max(load):.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
