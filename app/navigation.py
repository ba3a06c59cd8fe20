"""The app's pages, listed once: the entry point's navigation, also used to hand a deep link over to it."""

from __future__ import annotations

import streamlit as st

# (script, title, icon, url path): the first is the default page.
PAGES = (
    ("pages/home.py", "Start here", ":material/home:", "home"),
    ("pages/architecture.py", "Architecture", ":material/account_tree:", "architecture"),
    ("pages/tokens.py", "Tokens", ":material/text_fields:", "tokens"),
    ("pages/attention.py", "Attention", ":material/visibility:", "attention"),
    ("pages/predictions.py", "Predictions & logit lens", ":material/target:", "predictions"),
    ("pages/generate.py", "Watch the model write", ":material/edit_note:", "generate"),
    ("pages/compare.py", "Compare two models", ":material/compare_arrows:", "compare"),
    ("pages/cause_and_effect.py", "Cause and effect", ":material/science:", "cause-and-effect"),
)
PAGE_TITLES = {script: title for script, title, _, _ in PAGES}


def app_pages() -> list:
    return [
        st.Page(script, title=title, icon=icon, url_path=url_path, default=index == 0)
        for index, (script, title, icon, url_path) in enumerate(PAGES)
    ]
