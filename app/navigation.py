"""The app's pages, listed once: the entry point's navigation, also used to hand a deep link over to it."""

from __future__ import annotations

import streamlit as st

# (script, title, icon, url path): the first is the default page.
PAGES = (
    ("pages/home.py", "Start here", ":material/home:", "home"),
    ("pages/architecture.py", "Architecture", ":material/account_tree:", "architecture"),
    ("pages/tokens.py", "Tokens", ":material/text_fields:", "tokens"),
    ("pages/attention.py", "Attention", ":material/visibility:", "attention"),
    ("pages/inside.py", "Inside a head and an MLP", ":material/neurology:", "inside"),
    ("pages/flow.py", "Information flow", ":material/route:", "flow"),
    ("pages/predictions.py", "Predictions & logit lens", ":material/target:", "predictions"),
    ("pages/generate.py", "Watch the model write", ":material/edit_note:", "generate"),
    ("pages/compare.py", "Compare two models", ":material/compare_arrows:", "compare"),
    ("pages/cause_and_effect.py", "Cause and effect", ":material/science:", "cause_and_effect"),
)
PAGE_TITLES = {script: title for script, title, _, _ in PAGES}


PAGE_TO_OPEN = "_page_to_open"  # {"script", "query", "switches": how often it was opened so far}
MAX_SWITCHES = 3


def ask_to_open(script: str, query: dict) -> None:
    """Open page ``script`` with ``query`` in the URL at the start of the next run (callable from a callback)."""
    st.session_state[PAGE_TO_OPEN] = {"script": script, "query": query, "switches": 0}


def open_page(script: str, query: dict) -> None:
    """Open page ``script`` now, with ``query`` in the URL."""
    ask_to_open(script, query)
    open_asked_page(current_url_path=None)


def open_asked_page(current_url_path: str | None) -> None:
    """Run by the frame before each page: open the page asked for, until a run of it starts.

    Once is not always enough: a rerun the browser asks for while a switch is under way (a widget bound
    to the URL seeing the new query) wins over the switch, and would leave the student where they clicked.
    """
    asked = st.session_state.get(PAGE_TO_OPEN)
    if not asked:
        return
    arrived = asked["switches"] and current_url_path == url_path(asked["script"])
    if arrived or asked["switches"] >= MAX_SWITCHES:
        del st.session_state[PAGE_TO_OPEN]
        return
    asked["switches"] += 1
    st.switch_page(asked["script"], query_params=asked["query"])


def url_path(script: str) -> str:
    return next(path for page_script, _, _, path in PAGES if page_script == script)


def app_pages() -> list:
    return [
        st.Page(script, title=title, icon=icon, url_path=path, default=index == 0)
        for index, (script, title, icon, path) in enumerate(PAGES)
    ]
