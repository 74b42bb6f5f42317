"""IOI Circuit Lab dashboard: a thin router over the pages in pages/."""

import streamlit as st

st.set_page_config(page_title="IOI Circuit Lab", page_icon=":material/biotech:", layout="wide")
st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/explore:", default=True),
        st.Page("pages/datasets.py", title="Datasets", icon=":material/dataset:"),
        st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
        st.Page("pages/attribution.py", title="Logit attribution", icon=":material/grid_on:"),
        st.Page("pages/circuit.py", title="Circuit", icon=":material/hub:"),
        st.Page("pages/faithfulness.py", title="Faithfulness", icon=":material/show_chart:"),
        st.Page("pages/knockout.py", title="Knockout", icon=":material/content_cut:"),
        st.Page("pages/cmap.py", title="Cross-model patching", icon=":material/compare_arrows:"),
    ]
).run()
