"""Teacher tools: a presentation mode for a projector and a short note carried in the link.

``?present=true`` (or the sidebar toggle) collapses the sidebar and enlarges the type; every explanation
stays. ``?note=...`` puts up to 280 characters of the teacher's text at the top of every page, as plain
text: a link cannot inject HTML or Markdown through it. Values no widget holds (the note, a lesson's or a
generation's step) are kept in the link by hand here.
"""

from __future__ import annotations

import unicodedata

import streamlit as st

from app import keys

PRESENT_KEY = keys.PRESENT
NOTE_KEY = "note"
NOTE_LIMIT = 280

# Larger type for a projector: the app's own constant style, never built from user text.
_PRESENTATION_CSS = """<style>
[data-testid="stMain"] { font-size: 1.25rem; }
[data-testid="stMain"] p, [data-testid="stMain"] li, [data-testid="stMain"] label,
[data-testid="stMain"] [data-testid="stCaptionContainer"], [data-testid="stMain"] td,
[data-testid="stMain"] th { font-size: 1.2rem; }
[data-testid="stMain"] h1 { font-size: 3rem; }
[data-testid="stMain"] h3 { font-size: 1.9rem; }
</style>"""


def clean_note(value) -> str | None:
    """The note from the URL: text only, control characters removed, at most ``NOTE_LIMIT`` characters."""
    if not isinstance(value, str):
        return None
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in value)
    text = " ".join(text.split())[:NOTE_LIMIT]
    return text or None


def init() -> None:
    """Read the note from the URL once per session; page switches keep it in the session."""
    if NOTE_KEY not in st.session_state:
        st.session_state[NOTE_KEY] = clean_note(st.query_params.get(NOTE_KEY))


def keep_in_url(key: str, value: str | None) -> None:
    """Keep ``key=value`` in the address bar (no widget holds it, and changing page clears such parameters);
    remove ``key`` when ``value`` is None."""
    if value is None:
        if key in st.query_params:
            del st.query_params[key]
    elif st.query_params.get(key) != value:
        st.query_params[key] = value


def url_whole_number(value, low: int, high: int) -> int | None:
    """A whole number from ``low`` to ``high`` from the URL, or None when it is missing or not one (inf, 1e309,
    2.5, text)."""
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def url_step(value, count: int) -> int | None:
    """A step number from the URL (1-based, at most ``count``), or None when it is missing or not one."""
    return url_whole_number(value, 1, count)


def sync_url() -> None:
    keep_in_url(NOTE_KEY, st.session_state.get(NOTE_KEY))


def presenting() -> bool:
    """Whether this student's session is in presentation mode (the sidebar switch, or ``present=true``)."""
    return bool(st.session_state.get(PRESENT_KEY))


# A chart's axis and title type on a projector, like the page's text (legends keep Streamlit's theme, which
# sets their type itself): Vega-Lite config, merged into each chart a presenting session draws.
PROJECTOR_TYPE = {"axis": {"labelFontSize": 16, "titleFontSize": 17}, "title": {"fontSize": 20}}


def presentation_toggle() -> bool:
    """The sidebar switch for presentation mode, bound to ``?present=``; applies the mode when on."""
    on = st.toggle("Presentation mode", key=PRESENT_KEY, bind="query-params",
                   help="For a projector: larger type, sidebar folded away (open it with the arrow at the top "
                        "left). Share the link with present=true in it to open in this mode.")
    if on:
        st.set_page_config(initial_sidebar_state="collapsed")
        st.html(_PRESENTATION_CSS)
    return on


def show_note() -> None:
    """The teacher's note at the top of the page, as plain text (``st.text`` never reads Markdown or HTML)."""
    note = st.session_state.get(NOTE_KEY)
    if note:
        with st.container(border=True, key="teacher-note"):
            st.caption("Note from your teacher")
            st.text(note)
