"""opt_lens: look inside small language models. The entry point: shared sidebar, then the chosen page."""

import logging

import streamlit as st

import app_support as app

# Failures reach students as short messages; the details go to the server log (Cloud: "Manage app").
# The entry reruns on every interaction, so the handler is added once per process.
for logger in (logging.getLogger("opt_lens"), logging.getLogger("app_support")):
    if not any(isinstance(handler, logging.StreamHandler) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

st.set_page_config(page_title="opt_lens", page_icon=":material/search:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Start here", icon=":material/home:", url_path="home", default=True),
    st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:", url_path="architecture"),
    st.Page("pages/tokens.py", title="Tokens", icon=":material/text_fields:", url_path="tokens"),
    st.Page("pages/attention.py", title="Attention", icon=":material/visibility:", url_path="attention"),
    st.Page("pages/predictions.py", title="Predictions & logit lens", icon=":material/target:", url_path="predictions"),
    st.Page("pages/compare.py", title="Compare two models", icon=":material/compare_arrows:", url_path="compare"),
]

app.run_frame(st.navigation(PAGES).run)
