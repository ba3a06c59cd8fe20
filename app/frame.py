"""What every rerun does around the chosen page: logging, the sidebar, friendly errors, the memory note."""

from __future__ import annotations

import contextlib
import contextvars
import logging

import streamlit as st

import opt_lens
from app import lessons, teacher
from app.caches import model_cache, shared_model, tokenized_prompt
from app.navigation import app_pages, keep_sidebar_in_url, open_asked_page
from app.state import chosen_model, chosen_prompt, sidebar
from app.text import escape_markdown
from opt_lens.memory import format_bytes, keep_no_buffers_per_thread, return_large_blocks_when_freed

logger = logging.getLogger(__name__)

_inside_frame = contextvars.ContextVar("inside_frame", default=False)


def configure_server() -> None:
    """Process-wide policy, set by the entry point on every run (each call is cheap and idempotent).

    Freed model and capture buffers go back to the system rather than to a heap that only grows, no thread
    keeps math buffers of its own (before torch loads), and the library's and the app's log goes to the
    server's output (Cloud: "Manage app").
    """
    keep_no_buffers_per_thread()
    return_large_blocks_when_freed()
    for package_logger in (logging.getLogger("opt_lens"), logging.getLogger("app")):
        if not any(isinstance(handler, logging.StreamHandler) for handler in package_logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            package_logger.addHandler(handler)
            package_logger.setLevel(logging.INFO)


def sidebar_notes(placeholder) -> None:
    """Under the prompt: its length in the model's tokens, once the page has loaded the model (this never
    loads one), and which models the server holds."""
    cache = model_cache()
    name, prompt = chosen_model("model"), chosen_prompt()
    notes = []
    tokenized = None
    if name in cache.keys():
        with contextlib.suppress(opt_lens.OptLensError):  # the page has said what is wrong with the prompt
            tokenized = tokenized_prompt(name, prompt, ui=False)
    if tokenized:
        count, context = tokenized.n_prompt_tokens, shared_model(name, ui=False).arch.max_positions
        notes.append(f"The prompt is {count:,} of the {context:,} tokens {escape_markdown(name)} reads."
                     if not tokenized.truncated else
                     f"The prompt is {count:,} tokens, more than the {context:,} {escape_markdown(name)} reads: "
                     f"it is cut at the context, and every page shows the first {tokenized.seq_len:,}.")
    loaded = ", ".join(escape_markdown(key) for key in cache.keys()) or "none yet"
    notes.append(f"Models in memory: {loaded} (up to {format_bytes(cache.budget_bytes)} for models; "
                 "the least recently used is dropped first).")
    placeholder.caption("  \n".join(notes))


@contextlib.contextmanager
def friendly_errors():
    """An OptLensError becomes a short message; anything else a generic one (details go to the log)."""
    try:
        yield
    except opt_lens.OptLensError as error:
        # The student reads the short message; the log keeps what caused it (a timeout, a full disk, ...).
        logger.info("Shown to a student: %s", error, exc_info=error if error.__cause__ else None)
        st.error(escape_markdown(error), icon=":material/error:")
    except Exception:  # noqa: BLE001 - no student ever sees a traceback; the server log keeps it
        logger.exception("Page failed")
        st.error("Something went wrong while drawing this view. Try another prompt or model.", icon=":material/error:")


def run_frame(page) -> None:
    """What every rerun does around the current page: the shared sidebar, friendly errors, the memory note."""
    teacher.init()
    with friendly_errors():  # before any box is drawn; whatever fails, the sidebar and the page still come
        lessons.init()
    keep_sidebar_in_url(page.url_path)
    note = sidebar()
    inside = _inside_frame.set(True)
    try:
        with friendly_errors():
            open_asked_page(page.url_path)
            page.run()
    finally:  # also after st.stop() in a page
        _inside_frame.reset(inside)
        sidebar_notes(note)
        teacher.sync_url()
        lessons.sync_url()


def page_intro(title: str, what_it_shows: str) -> None:
    """A page's title and what it shows (every page starts with it), run inside the entry point's frame.

    A fresh server whose first request is a deep link runs the page script alone: Streamlit still treats
    the pages/ folder as an old-style multipage app until some run has called st.navigation. The page then
    registers the app's pages itself and reruns, through the entry point, on the same page.
    """
    if not _inside_frame.get():
        st.navigation(app_pages(), position="hidden")
        st.rerun()
    teacher.show_note()
    st.title(title)
    st.markdown(what_it_shows)
    lessons.banner(title)
