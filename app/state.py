"""What a student has chosen, kept in widgets bound to the URL: the models, the prompt, the sidebar.

Model, second model and prompt live in widgets with ``bind="query-params"`` (layer and head on the Attention
page), so a copied link reopens the same view. A URL is untrusted: every value is checked before use, and
a value that fails falls back to the default with a short message.
"""

from __future__ import annotations

import streamlit as st

import opt_lens
from app import glossary, keys, teacher
from app.caches import cached_hub_models, hub_online
from app.text import escape_markdown

DEMO_MODELS = list(opt_lens.DEMO_MODELS)
GPT2_FAMILY = ["gpt2", "distilgpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
OPT_FAMILY = ["facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b", "facebook/opt-2.7b"]
DEFAULT_PROMPT = "Alice went to the park. Bob gave the ball to Alice. Then Alice gave the ball to Bob. The cat sat on the"
# The real cap is the model's context: the library cuts a longer prompt there, and the sidebar says so. This
# bound only keeps a pasted book out of the URL and the tokenizer: OPT's 2,048 tokens, the longest context
# the app offers, are about 11,000 characters of English prose (GPT-2's tokenizer: about 5.4 per token).
MAX_PROMPT_CHARS = 12_000
MODEL_KEYS = (keys.MODEL, "model_b")  # the sidebar's model and the second model of Tokens and Compare


def can_load(name: str) -> bool:
    """Whether ``name`` loads here: a demo model, a model in the local Hugging Face cache, or any with the Hub."""
    return name in DEMO_MODELS or hub_online() or name in cached_hub_models()


def default_models() -> tuple[str, str]:
    """GPT-2 and OPT-125m where they load (online, or from the local cache), else the demo of each family."""
    first = "gpt2" if can_load("gpt2") else DEMO_MODELS[0]
    second = "facebook/opt-125m" if can_load("facebook/opt-125m") else DEMO_MODELS[1]
    return first, second


def model_options() -> list[str]:
    """The models every model box lists (a student may type any other Hugging Face ID): the demo models, the
    GPT-2 and OPT families and every cached model; without the Hub, only those that load."""
    options = list(dict.fromkeys(DEMO_MODELS + GPT2_FAMILY + OPT_FAMILY + cached_hub_models()))
    return [name for name in options if can_load(name)]


CACHED_MARK, NEEDS_HUB_MARK = " · cached here", " (needs the Hugging Face Hub)"


def model_id(label: str) -> str:
    """The model ID in a box's label. The browser writes a box's label, not its value, into the link, and the
    marks depend on the server: a link copied on a laptop that has the model cached must still name it on a
    server that does not."""
    for mark in (CACHED_MARK, NEEDS_HUB_MARK):
        if label.endswith(mark):
            return label[: -len(mark)]
    return label


def model_label(name: str) -> str:
    """How a model shows in a box: cached models are marked; one that cannot load here says why."""
    name = model_id(name)
    if name in DEMO_MODELS:
        return name
    if name in cached_hub_models():
        return name + CACHED_MARK
    return name if hub_online() else name + NEEDS_HUB_MARK


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


def _checked_model(name) -> str:
    """``name`` as a model ID; raises OptLensError for anything else (a path, a URL, markup)."""
    if not isinstance(name, str) or not name.strip():
        raise opt_lens.OptLensError("Choose a model or type a Hugging Face model ID.")
    return opt_lens.validate_name(model_id(name.strip()), allow_local=False)


def chosen_model(key: str) -> str:
    """The model the box ``key`` names (or, before that box is drawn, the link), checked; the default when it
    names none (a bad link, say)."""
    try:
        return _checked_model(st.session_state.get(key, st.query_params.get(key)))
    except opt_lens.OptLensError:
        return default_models()[MODEL_KEYS.index(key)]


def chosen_prompt() -> str:
    prompt = st.session_state.get(keys.PROMPT)
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
                 accept_new_options=True, help=help_text, on_change=_refuse_invalid_model, args=(key,),
                 format_func=model_label)
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
    if not st.session_state[keys.PROMPT].strip():
        st.session_state[keys.PROMPT] = DEFAULT_PROMPT


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
        if banner := availability():
            st.info(banner, icon=":material/cloud_off:")
        model_box("Model", "model", "The demo models, GPT-2 and OPT models, and the models in this computer's "
                  "Hugging Face cache (marked 'cached here'); type any other Hugging Face model ID and press Enter.")
        st.text_area("Prompt", DEFAULT_PROMPT, key=keys.PROMPT, bind="query-params", max_chars=MAX_PROMPT_CHARS,
                     height=140, on_change=_keep_a_prompt,
                     help="Every page shows what the model computes on this text. Press Ctrl+Enter to apply.")
        teacher.presentation_toggle()
        glossary.glossary()
        return st.empty()


def clicked_head(event, n_layers: int, n_heads: int) -> tuple[int, int] | None:
    """The (layer, head) of a click on the head map, or None; the event comes from the browser, so check it."""
    try:
        point = event["selection"]["picked"][0]
        layer, head = int(point["layer"]), int(point["head"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return (layer, head) if 0 <= layer < n_layers and 0 <= head < n_heads else None


def whole_number_box(container, label: str, low: int, high: int, default: int, key: str, **kwargs) -> int:
    """A number box for a whole number from ``low`` to ``high``, kept in the URL by hand rather than bound.

    Streamlit reads a bound number box's value from the URL itself, before any check of the app's can run, and
    fails on inf and 1e309 (going back in the browser reads it again). So the link's value is checked here
    before the box is first drawn: one that is no whole number in range is ignored with a note beside the box,
    and ``default`` stays out of the link.
    """
    note = None
    if key not in st.session_state:  # drawn before: the box holds the value
        asked = st.query_params.get(key)
        number = teacher.url_whole_number(asked, low, high)
        st.session_state[key] = default if number is None else number
        if asked is not None and number is None:
            note = f"The link's {label.lower()} was ignored: it is a whole number from {low:,} to {high:,}."
    value = int(container.number_input(label, low, high, step=1, key=key, **kwargs))
    teacher.keep_in_url(key, None if value == default else str(value))
    if note:
        container.caption(note)
    return value
