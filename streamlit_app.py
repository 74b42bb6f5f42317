"""IOI Circuit Lab dashboard: a thin router over the pages in pages/."""

import streamlit as st

st.set_page_config(page_title="IOI Circuit Lab", page_icon="🔬", layout="wide")
st.navigation([st.Page("pages/overview.py", title="Overview", default=True)]).run()
