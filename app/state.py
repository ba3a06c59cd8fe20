"""What a student has chosen, kept in widgets bound to the URL: the models, the prompt, the sidebar.

Model, second model and prompt live in widgets with ``bind="query-params"`` (layer and head on the Attention
page), so a copied link reopens the same view. A URL is untrusted: every value is checked before use, and
a value that fails falls back to the default with a short message.
"""

from __future__ import annotations

import streamlit as st

import opt_lens
from app.caches import hub_online
from app.text import escape_markdown

DEMO_MODELS = list(opt_lens.DEMO_MODELS)
GPT2_FAMILY = ["gpt2", "distilgpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
OPT_FAMILY = ["facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b", "facebook/opt-2.7b"]
DEFAULT_PROMPT = "Alice went to the park. Bob gave the ball to Alice. Then Alice gave the ball to Bob. The cat sat on the"
MAX_PROMPT_CHARS = 4000
MODEL_KEYS = ("model", "model_b")  # the sidebar's model and the second model of Tokens and Compare


def default_models() -> tuple[str, str]:
    return ("gpt2", "facebook/opt-125m") if hub_online() else ("demo/tiny-gpt2", "demo/tiny-opt")


def model_options() -> list[str]:
    """The models every model box lists (a student may type any other Hugging Face ID)."""
    return DEMO_MODELS + GPT2_FAMILY + (OPT_FAMILY if hub_online() else [])


def _checked_model(name) -> str:
    """``name`` as a model ID; raises OptLensError for anything else (a path, a URL, markup)."""
    if not isinstance(name, str) or not name.strip():
        raise opt_lens.OptLensError("Choose a model or type a Hugging Face model ID.")
    return opt_lens.validate_name(name.strip(), allow_local=False)


def chosen_model(key: str) -> str:
    """The model the box ``key`` names, checked; the default when it names none (a bad link, say)."""
    try:
        return _checked_model(st.session_state.get(key))
    except opt_lens.OptLensError:
        return default_models()[MODEL_KEYS.index(key)]


def chosen_prompt() -> str:
    prompt = st.session_state.get("prompt")
    return prompt if isinstance(prompt, str) and prompt.strip() else DEFAULT_PROMPT


def _refuse_invalid_model(key: str) -> None:
    """A typed name that is not a model ID leaves the previous model in place, and says why."""
    try:
        st.session_state[key] = _checked_model(st.session_state[key])
        st.session_state[f"_{key}_in_use"] = st.session_state[key]
    except opt_lens.OptLensError as error:
        st.session_state[f"_{key}_refused"] = escape_markdown(error)
        st.session_state[key] = st.session_state.get(f"_{key}_in_use", default_models()[MODEL_KEYS.index(key)])


def model_box(label: str, key: str, help_text: str) -> str:
    """A dropdown of known models that also takes any typed Hugging Face ID; returns the model in use."""
    default = default_models()[MODEL_KEYS.index(key)]
    options = model_options()
    st.selectbox(label, options, index=options.index(default), key=key, bind="query-params",
                 accept_new_options=True, help=help_text, on_change=_refuse_invalid_model, args=(key,))
    refused = st.session_state.pop(f"_{key}_refused", None)
    if refused:
        st.error(refused, icon=":material/error:")
    else:
        try:  # a link's value reaches the box without passing the callback
            _checked_model(st.session_state[key])
        except opt_lens.OptLensError as error:
            st.error(f"{escape_markdown(error)} Showing {escape_markdown(default)} instead.", icon=":material/error:")
    name = chosen_model(key)
    st.session_state[f"_{key}_in_use"] = name
    return name


def _keep_a_prompt() -> None:
    if not st.session_state.prompt.strip():
        st.session_state.prompt = DEFAULT_PROMPT


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
    """The shared controls, identical on every page; returns a placeholder the frame fills after the page."""
    with st.sidebar:
        if not hub_online():
            st.info("The Hugging Face Hub can't be reached from this server, so the app runs on the two bundled "
                    "demo models (tiny toys trained on simple sentences); the others in the lists need the Hub.",
                    icon=":material/cloud_off:")
        model_box("Model", "model", "GPT-2 models and the demo models; type any other Hugging Face model ID, "
                  "such as facebook/opt-125m or facebook/opt-350m, and press Enter.")
        st.text_area("Prompt", DEFAULT_PROMPT, key="prompt", bind="query-params", max_chars=MAX_PROMPT_CHARS,
                     height=140, on_change=_keep_a_prompt,
                     help="Every page shows what the model computes on this text. Press Ctrl+Enter to apply.")
        return st.empty()


def clicked_head(event, n_layers: int, n_heads: int) -> tuple[int, int] | None:
    """The (layer, head) of a click on the head map, or None; the event comes from the browser, so check it."""
    try:
        point = event["selection"]["picked"][0]
        layer, head = int(point["layer"]), int(point["head"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return (layer, head) if 0 <= layer < n_layers and 0 <= head < n_heads else None
