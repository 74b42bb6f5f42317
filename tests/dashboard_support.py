"""Support for dashboard tests (and the dashboard benchmark): starting the app on a free port,
and a small result cache written through the real cache API (no training).

The numbers are synthetic (seeded noise on a 2-layer × 4-head model): the dashboard tests check
that every page renders and reads the cache correctly, not what the analyses find.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ioi.methods.analyses import AnalysisResult
from ioi.task.circuit import Circuit, Head

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
N_LAYERS, N_HEADS = 2, 4
CIRCUIT = Circuit("toy", {"name mover": (Head(1, 0),), "s-inhibition": (Head(0, 2),)}, "synthetic")
SCENARIOS = {"aaaa000000000001": ("clean", None), "aaaa000000000002": ("subject_duplication", None),
             "aaaa000000000003": ("reversal", "aaaa000000000002")}  # fmt: skip


def start_streamlit(
    env: dict[str, str], log=subprocess.DEVNULL, script: Path = REPO / "streamlit_app.py"
) -> tuple[subprocess.Popen, str]:
    """Launch `streamlit run <script>` (default the dashboard) headless on a free localhost port,
    from the repository (its .streamlit/config.toml applies), with `env` added to this process's
    environment: (the server process, its base url). The caller stops it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=REPO, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def _heads(rng: np.random.Generator, **extra: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame([{"layer": la, "head": h} for la in range(N_LAYERS) for h in range(N_HEADS)]).assign(
        value=rng.normal(size=N_LAYERS * N_HEADS)
    )
    return frame.assign(**extra)


def build_cache(root: Path, epochs: tuple[int, ...] = (0, 1, 2)) -> list[str]:
    """Write three experiments (clean, a toxic one, its reversal) with metrics, dla,
    faithfulness, knockout and cmap at `epochs` under `root`; returns their ids."""
    from ioi.runs.cache import register_experiment, write_analysis, write_entry

    rng = np.random.default_rng(0)
    classes = pd.DataFrame({"class": list(CIRCUIT.classes), "f_knockout": [0.5, 1.0],
                            "change": [-1.0, -0.5], "relative": [-0.6, -0.3]})  # fmt: skip
    for exp_id, (scenario, parent) in SCENARIOS.items():
        config = {"model": "random:tiny", "scenario": scenario, "epochs": max(epochs), "seed": 0,
                  "lr": 1e-3, "checkpoint_epochs": list(epochs[1:]), "parent": parent,
                  "analyses": ["dla", "faithfulness", "knockout", "cmap"]}  # fmt: skip
        register_experiment(root, exp_id, {"id": exp_id, "config": config})
        for epoch in epochs:
            ld = 1.5 + epoch * (0.5 if scenario != "subject_duplication" else -1.0)
            write_entry(root, exp_id, epoch, "metrics", {"logit_diff": ld, "logit_diff_se": 0.1,
                        "accuracy": 0.8, "io_prob": 0.3, "label_prob": 0.3, "n": 32})  # fmt: skip
            write_analysis(root, exp_id, epoch, "dla", AnalysisResult("dla", _heads(rng), {"logit_diff": ld}))
            faith = {"faithfulness": 0.8 + 0.05 * epoch, "f_model": ld, "ablation": "mean-by-template",
                     "circuit": CIRCUIT.to_json()}  # fmt: skip
            write_analysis(
                root, exp_id, epoch, "faithfulness", AnalysisResult("faithfulness", _heads(rng), faith)
            )
            ko = {"f_model": ld, "ablation": "mean-by-template", "circuit": CIRCUIT.to_json()}
            write_analysis(root, exp_id, epoch, "knockout",
                           AnalysisResult("knockout", _heads(rng), ko, {"classes": classes}))  # fmt: skip
            if epoch > 0:
                ci = rng.uniform(0.05, 0.2, size=N_LAYERS * N_HEADS)
                heads = _heads(rng)
                heads = heads.assign(share_of_gap=heads["value"] / 2, ci_low=heads["value"] - ci,
                                     ci_high=heads["value"] + ci)  # fmt: skip
                cls = classes[["class"]].assign(value=[0.4, -0.2], share_of_gap=[0.2, -0.1],
                                                ci_low=[0.3, -0.3], ci_high=[0.5, -0.1])  # fmt: skip
                summary = {"mode": "output", "direction": "a<-b", "positions": "end", "f_a": ld, "f_b": 1.5}
                write_analysis(root, exp_id, epoch, "cmap",
                               AnalysisResult("cmap", heads, summary, {"classes": cls}))  # fmt: skip
    return list(SCENARIOS)


def open_page(page: str, *, timeout: float = 120, **params: str):
    """Run the app under AppTest with `params` in its URL, switched to `page` (the Overview is the
    default page, so it is not switched to); returns the AppTest after its run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=timeout)
    for name, value in params.items():
        at.query_params[name] = value
    if page != "app_pages/overview.py":
        at.switch_page(page)
    return at.run()
