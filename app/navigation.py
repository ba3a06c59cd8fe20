"""The app's pages, listed once: the entry point's navigation, and the page switches buttons ask for."""

from __future__ import annotations

import streamlit as st

from app import keys

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
    """Open page ``script`` at the start of the next run (callable from a callback).

    The caller has put the settings of the page's boxes into ``st.session_state`` already; ``query`` holds
    them again as the new URL, which a box seeds from when the page first draws it (on a page switch the
    URL wins over the session). Staying on the page, nothing is switched: the boxes take the session's
    values, and Streamlit writes them into the URL itself.
    """
    st.session_state[PAGE_TO_OPEN] = {"script": script, "query": query, "switches": 0}


def open_page(script: str, query: dict) -> None:
    """Open page ``script`` now, with ``query`` in the URL (another page: its boxes are not bound yet)."""
    ask_to_open(script, query)
    open_asked_page(current_url_path=None)


def open_asked_page(current_url_path: str | None) -> None:
    """Run by the frame before each page: open the page asked for, until a run of it starts.

    Once is not always enough: a rerun the browser asks for while a switch is under way (a widget bound
    to the URL seeing the new query) wins over the switch, and would leave the student where they clicked.
    A page already open is not switched to: ``st.switch_page`` may not set the parameters of its boxes,
    which are bound to the URL while the page is open.
    """
    asked = st.session_state.get(PAGE_TO_OPEN)
    if not asked:
        return
    if current_url_path == url_path(asked["script"]) or asked["switches"] >= MAX_SWITCHES:
        del st.session_state[PAGE_TO_OPEN]
        return
    asked["switches"] += 1
    st.switch_page(asked["script"], query_params=asked["query"])


def keep_sidebar_in_url(current_url_path: str) -> None:
    """Run by the frame before the sidebar is drawn: on the first run of a page a switch opened, write the
    sidebar's settings back into the session.

    ``st.switch_page`` replaces the whole URL and may not name the sidebar's boxes (they are bound on every
    page), so the model and prompt would drop out of the link; a value written into the session is one the
    box puts back into the URL.
    """
    asked = st.session_state.get(PAGE_TO_OPEN)
    if asked and asked["switches"] and current_url_path == url_path(asked["script"]):
        for key in keys.SIDEBAR:
            if key in st.session_state:
                st.session_state[key] = st.session_state[key]


def url_path(script: str) -> str:
    """The page's path in the URL, as ``st.Page.url_path`` gives it: the default page is served at the root."""
    return next("" if index == 0 else path for index, (page_script, _, _, path) in enumerate(PAGES)
                if page_script == script)


def app_pages() -> list:
    return [
        st.Page(script, title=title, icon=icon, url_path=path, default=index == 0)
        for index, (script, title, icon, path) in enumerate(PAGES)
    ]
