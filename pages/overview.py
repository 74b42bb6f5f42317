import streamlit as st

st.title("IOI Circuit Lab")
st.write(
    "Reproduce and extend *Neuroplasticity and Corruption in Model Mechanisms* "
    "(arXiv 2503.01896): circuit amplification, localized corruption and neuroplasticity "
    "of the indirect-object-identification circuit under fine-tuning."
)
