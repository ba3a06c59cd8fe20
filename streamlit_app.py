"""opt_lens: look inside small language models. The entry point: shared sidebar, then the chosen page."""

import streamlit as st

from app import frame

frame.configure_logging()

st.set_page_config(page_title="opt_lens", page_icon=":material/search:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Start here", icon=":material/home:", url_path="home", default=True),
    st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:", url_path="architecture"),
    st.Page("pages/tokens.py", title="Tokens", icon=":material/text_fields:", url_path="tokens"),
    st.Page("pages/attention.py", title="Attention", icon=":material/visibility:", url_path="attention"),
    st.Page("pages/predictions.py", title="Predictions & logit lens", icon=":material/target:", url_path="predictions"),
    st.Page("pages/compare.py", title="Compare two models", icon=":material/compare_arrows:", url_path="compare"),
]

frame.run_frame(st.navigation(PAGES).run)
