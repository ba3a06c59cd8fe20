"""opt_lens: look inside small language models. The entry point: shared sidebar, then the chosen page."""

import streamlit as st

import app_support as app

st.set_page_config(page_title="opt_lens", page_icon="🔎", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Start here", icon="🏠", url_path="home", default=True),
    st.Page("pages/architecture.py", title="Architecture", icon="🏗️", url_path="architecture"),
    st.Page("pages/tokens.py", title="Tokens", icon="🔤", url_path="tokens"),
    st.Page("pages/attention.py", title="Attention", icon="👀", url_path="attention"),
    st.Page("pages/predictions.py", title="Predictions & logit lens", icon="🎯", url_path="predictions"),
    st.Page("pages/compare.py", title="Compare two models", icon="⚖️", url_path="compare"),
]

app.run_frame(st.navigation(PAGES).run)
