"""IOI Circuit Lab dashboard: a thin router over the pages in app_pages/.

The folder is deliberately not called pages/: Streamlit 1.67 treats a pages/ folder beside the main
script as a v1 multipage app until a session first runs this script, so a deep link (e.g. /experiments)
as the first request after a restart would bypass this router for every session of that server.
"""

from pathlib import Path

import streamlit as st

# A local file: a material icon as page icon is fetched from fonts.gstatic.com, which fails offline.
ICON = str(Path(__file__).resolve().parent / ".streamlit" / "favicon.png")
st.set_page_config(page_title="IOI Circuit Lab", page_icon=ICON, layout="wide")
st.navigation(
    [
        st.Page("app_pages/overview.py", title="Overview", icon=":material/explore:", default=True),
        st.Page("app_pages/findings.py", title="Findings", icon=":material/fact_check:"),
        st.Page("app_pages/datasets.py", title="Datasets", icon=":material/dataset:"),
        st.Page("app_pages/experiments.py", title="Experiments", icon=":material/science:"),
        st.Page("app_pages/attribution.py", title="Logit attribution", icon=":material/grid_on:"),
        st.Page("app_pages/circuit.py", title="Circuit", icon=":material/hub:"),
        st.Page("app_pages/faithfulness.py", title="Faithfulness", icon=":material/show_chart:"),
        st.Page("app_pages/knockout.py", title="Knockout", icon=":material/content_cut:"),
        st.Page("app_pages/cmap.py", title="Cross-model patching", icon=":material/compare_arrows:"),
        st.Page("app_pages/evolution.py", title="Evolution", icon=":material/timeline:"),
        st.Page("app_pages/playground.py", title="Playground", icon=":material/keyboard:"),
        st.Page("app_pages/head.py", title="Head", icon=":material/center_focus_strong:"),
    ]
).run()
