"""IOI Circuit Lab dashboard: a thin router over the pages in pages/."""

import streamlit as st

st.set_page_config(page_title="IOI Circuit Lab", page_icon="🔬", layout="wide")
st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon="🧭", default=True),
        st.Page("pages/datasets.py", title="Datasets", icon="📄"),
        st.Page("pages/experiments.py", title="Experiments", icon="🧪"),
        st.Page("pages/attribution.py", title="Logit attribution", icon="🟥"),
        st.Page("pages/circuit.py", title="Circuit", icon="🕸️"),
        st.Page("pages/faithfulness.py", title="Faithfulness", icon="📈"),
        st.Page("pages/knockout.py", title="Knockout", icon="✂️"),
        st.Page("pages/cmap.py", title="Cross-model patching", icon="🔀"),
    ]
).run()
