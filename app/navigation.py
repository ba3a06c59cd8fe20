"""The app's pages, listed once: the entry point's navigation, also used to hand a deep link over to it."""

from __future__ import annotations

import streamlit as st


def app_pages() -> list:
    return [
        st.Page("pages/home.py", title="Start here", icon=":material/home:", url_path="home", default=True),
        st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:", url_path="architecture"),
        st.Page("pages/tokens.py", title="Tokens", icon=":material/text_fields:", url_path="tokens"),
        st.Page("pages/attention.py", title="Attention", icon=":material/visibility:", url_path="attention"),
        st.Page("pages/predictions.py", title="Predictions & logit lens", icon=":material/target:",
                url_path="predictions"),
        st.Page("pages/compare.py", title="Compare two models", icon=":material/compare_arrows:", url_path="compare"),
    ]
