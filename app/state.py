"""Session and URL state: defaults, the model lists and pickers, the shared sidebar, checked layer/head values.

Everything read from the URL or the browser is untrusted and validated before it reaches the session.
"""

from __future__ import annotations

import streamlit as st

import opt_lens
from app import glossary, lessons, teacher
from app.caches import hub_online
from app.text import escape_markdown

DEMO_MODELS = list(opt_lens.DEMO_MODELS)
GPT2_FAMILY = ["gpt2", "distilgpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
OPT_FAMILY = ["facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b", "facebook/opt-2.7b"]
TYPE_YOUR_OWN = "Type a model ID…"
DEFAULT_PROMPT = "Alice went to the park. Bob gave the ball to Alice. Then Alice gave the ball to Bob. The cat sat on the"
MAX_PROMPT_CHARS = 4000


def _int_param(value, low: int, high: int) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def _model_param(value) -> str | None:
    try:
        return opt_lens.validate_name(str(value), allow_local=False) if value else None
    except opt_lens.OptLensError:
        return None


def default_models() -> tuple[str, str]:
    return ("gpt2", "facebook/opt-125m") if hub_online() else ("demo/tiny-gpt2", "demo/tiny-opt")


def init_state() -> None:
    """Fill the session from the URL once (validated: it is untrusted), falling back to defaults."""
    if st.session_state.get("_initialised"):
        return
    params = st.query_params
    first, second = default_models()
    prompt = params.get("prompt")
    st.session_state.model = _model_param(params.get("model")) or first
    st.session_state.model_b = _model_param(params.get("model_b")) or second
    st.session_state.prompt = prompt[:MAX_PROMPT_CHARS] if isinstance(prompt, str) and prompt.strip() else DEFAULT_PROMPT
    st.session_state.layer = _int_param(params.get("layer"), 0, 200) or 0
    st.session_state.head = _int_param(params.get("head"), 0, 200) or 0
    teacher.init()
    lessons.init()
    st.session_state._initialised = True


def sync_url() -> None:
    """Write the view into the URL so that a shared link reproduces it."""
    state = st.session_state
    wanted = {
        "model": state.model, "model_b": state.model_b, "prompt": state.prompt,
        "layer": str(state.layer), "head": str(state.head), **teacher.url_params(), **lessons.url_params(),
    }
    for key, value in wanted.items():
        if st.query_params.get(key) != value:
            st.query_params[key] = value
    for key in {teacher.NOTE_KEY, lessons.LESSON_KEY} - wanted.keys():  # a finished lesson leaves the URL
        if key in st.query_params:
            del st.query_params[key]


def _model_options(current: str) -> list[str]:
    options = DEMO_MODELS + GPT2_FAMILY + (OPT_FAMILY if hub_online() else [])
    return options + ([current] if current not in options else []) + [TYPE_YOUR_OWN]


def model_label(name: str) -> str:
    """How a model shows in a dropdown: offline, Hub models say that they cannot load here."""
    if name in DEMO_MODELS or name == TYPE_YOUR_OWN or hub_online():
        return name
    return f"{name} (needs the Hugging Face Hub)"


def model_picker(label: str, key: str, help_text: str) -> None:
    """A dropdown of known models plus a box for any Hugging Face ID, bound to ``st.session_state[key]``.

    The widgets carry no key of their own: their position follows the session state, so pickers on
    different pages (and the URL) always agree.
    """
    typing = f"_{key}_typing"
    current = st.session_state[key]
    options = _model_options(current)
    index = len(options) - 1 if st.session_state.get(typing) else options.index(current)
    choice = st.selectbox(label, options, index=index, help=help_text, format_func=model_label)
    st.session_state[typing] = choice == TYPE_YOUR_OWN
    if choice != TYPE_YOUR_OWN:
        st.session_state[key] = choice
        return
    typed = st.text_input(f"{label}: Hugging Face model ID", placeholder="facebook/opt-125m", max_chars=100).strip()
    if typed:
        try:
            st.session_state[key] = opt_lens.validate_name(typed, allow_local=False)
            st.session_state[typing] = False
            st.rerun()
        except opt_lens.OptLensError as error:
            st.error(escape_markdown(error))


def typed_model_id(text: str) -> str | None:
    """A model ID typed by a user, checked; a bad one shows a short warning and gives None."""
    text = text.strip()
    if not text:
        return None
    try:
        return opt_lens.validate_name(text, allow_local=False)
    except opt_lens.OptLensError as error:
        st.warning(escape_markdown(error), icon=":material/warning:")
        return None


def sidebar():
    """The shared controls, identical on every page."""
    init_state()
    with st.sidebar:
        if not hub_online():
            st.info("The Hugging Face Hub can't be reached from this server, so the app runs on the two bundled "
                    "demo models (tiny toys trained on simple sentences).", icon=":material/cloud_off:")
        model_picker("Model", "model", "GPT-2 models and the demo models; choose 'Type a model ID' for others, "
                     "such as facebook/opt-125m or facebook/opt-350m.")
        st.session_state.prompt = st.text_area(
            "Prompt", value=st.session_state.prompt, max_chars=MAX_PROMPT_CHARS, height=140,
            help="Every page shows what the model computes on this text. Press Ctrl+Enter to apply.",
        ) or st.session_state.prompt
        teacher.presentation_toggle()
        glossary.glossary()
        return st.empty()  # filled after the page has run, when its models are loaded


def clamp(value: int, upper: int) -> int:
    return min(max(int(value), 0), max(upper - 1, 0))


def clicked_head(event, n_layers: int, n_heads: int) -> tuple[int, int] | None:
    """The (layer, head) of a click on the head map, or None; the event comes from the browser, so check it."""
    try:
        point = event["selection"]["picked"][0]
        layer, head = int(point["layer"]), int(point["head"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return (layer, head) if 0 <= layer < n_layers and 0 <= head < n_heads else None
