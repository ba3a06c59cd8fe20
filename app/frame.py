"""What every rerun does around the chosen page: the sidebar, friendly errors, the memory note, the URL."""

from __future__ import annotations

import contextlib
import logging

import streamlit as st

import opt_lens
from app import lessons, teacher
from app.caches import model_cache
from app.state import sidebar, sync_url
from app.text import escape_markdown
from opt_lens.memory import format_bytes

logger = logging.getLogger(__name__)

# Streamlit treats a folder named pages/ as an old-style multipage app until some run calls st.navigation:
# on a fresh server, a shared link to /attention would run that page alone, without streamlit_app.py.
# Opt out once per process and restart that first run through the entry point.
try:
    from streamlit.runtime.pages_manager import PagesManager  # internal: guarded, the app runs without it
except ImportError:  # pragma: no cover - a Streamlit that moved it
    PagesManager = None
if getattr(PagesManager, "uses_pages_directory", False):
    PagesManager.uses_pages_directory = False
    st.rerun()


def configure_logging() -> None:
    """Send the library's and the app's log to the server's output, once per process (the entry reruns)."""
    for package_logger in (logging.getLogger("opt_lens"), logging.getLogger("app")):
        if not any(isinstance(handler, logging.StreamHandler) for handler in package_logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            package_logger.addHandler(handler)
            package_logger.setLevel(logging.INFO)


def memory_note(placeholder) -> None:
    cache = model_cache()
    loaded = ", ".join(cache.keys()) or "none yet"
    placeholder.caption(f"Models in memory: {loaded} (up to {format_bytes(cache.budget_bytes)} for models; "
                        "the least recently used is dropped first).")


@contextlib.contextmanager
def friendly_errors():
    """An OptLensError becomes a short message; anything else a generic one (details go to the log)."""
    try:
        yield
    except opt_lens.OptLensError as error:
        st.error(escape_markdown(error), icon=":material/error:")
    except Exception:  # noqa: BLE001 - no student ever sees a traceback; the server log keeps it
        logger.exception("Page failed")
        st.error("Something went wrong while drawing this view. Try another prompt or model.", icon=":material/error:")


def run_frame(run_page) -> None:
    """What every rerun does around the current page: the shared sidebar, friendly errors, the URL."""
    note = sidebar()
    try:
        with friendly_errors():
            teacher.show_note()
            lessons.banner()
            run_page()
    finally:  # also after st.stop() or st.rerun() in a page: the URL always matches the view
        memory_note(note)
        sync_url()
