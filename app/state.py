"""Session and URL state: defaults, the model lists and pickers, the shared sidebar, checked layer/head values.

Everything read from the URL or the browser is untrusted and validated before it reaches the session.
"""

from __future__ import annotations

import streamlit as st

import opt_lens
from app import glossary, lessons, teacher
from app.caches import cached_hub_models, hub_online
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


def can_load(name: str) -> bool:
    """Whether ``name`` loads here: a demo model, a model in the local Hugging Face cache, or any with the Hub."""
    return name in DEMO_MODELS or hub_online() or name in cached_hub_models()


def default_models() -> tuple[str, str]:
    """GPT-2 and OPT-125m where they load (online, or from the local cache), else the demo of each family."""
    first = "gpt2" if can_load("gpt2") else DEMO_MODELS[0]
    second = "facebook/opt-125m" if can_load("facebook/opt-125m") else DEMO_MODELS[1]
    return first, second


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


def model_options() -> list[str]:
    """The models the dropdowns offer: the demo models, GPT-2 and OPT families and every cached model; without
    the Hub, only those that load (the demo models and the cached ones)."""
    options = list(dict.fromkeys(DEMO_MODELS + GPT2_FAMILY + OPT_FAMILY + cached_hub_models()))
    return [name for name in options if can_load(name)]


def _model_options(current: str) -> list[str]:
    options = model_options()
    return options + ([current] if current not in options else []) + [TYPE_YOUR_OWN]


def model_label(name: str) -> str:
    """How a model shows in a dropdown: cached models are marked; one that cannot load here says why."""
    if name in DEMO_MODELS or name == TYPE_YOUR_OWN:
        return name
    if name in cached_hub_models():
        return f"{name} · cached here"
    return name if hub_online() else f"{name} (needs the Hugging Face Hub)"


def availability() -> str | None:
    """What runs here when the Hub cannot be reached (None when it can): the banner of the sidebar."""
    if hub_online():
        return None
    cached = cached_hub_models()
    demos = "the two bundled demo models (tiny toys trained on simple sentences)"
    if not cached:
        return f"The Hugging Face Hub can't be reached from this server, so the app runs on {demos}."
    listed = ", ".join(cached[:6]) + (f" and {len(cached) - 6} more" if len(cached) > 6 else "")
    return (f"The Hugging Face Hub can't be reached from this server. Available here: {escape_markdown(listed)} "
            f"from this computer's model cache, and {demos}.")


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
        if banner := availability():
            st.info(banner, icon=":material/cloud_off:")
        model_picker("Model", "model", "The demo models, GPT-2 and OPT models, and the models in this computer's "
                     "Hugging Face cache (marked 'cached here'); choose 'Type a model ID' for any other.")
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
