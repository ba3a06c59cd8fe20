import html

import streamlit as st

import opt_lens
from app import caches, charts, frame, keys, selection, state, tables, teacher, text
from app import generation_views as views
from opt_lens.generation import MAX_NEW_TOKENS, MAX_SEED, Step

frame.page_intro(
    "Watch the model write",
    "The model guesses a next token, that token is added to the text, and it guesses again: this is all "
    "that writing is. Each new token below is coloured by the probability it had when it was chosen. "
    "**Notice** where the model is sure (dark) and where it hesitates (pale), and pick a token to see what "
    "else it could have written there.",
)

TOP_K_OPTIONS = [0, 1, 2, 3, 5, 10, 20, 50, 100]  # 0: every token stays a candidate
MAX_TEMPERATURE = 2.0


def probability_colour(probability: float) -> tuple[str, str]:
    """Background and text colour of a chip: the darker the green, the more likely the token was."""
    background = f"rgba(0, 110, 50, {0.08 + 0.87 * probability:.2f})"
    return background, "white" if probability > 0.55 else "black"


def token_pill(index: int, step: Step) -> str:
    """A new token as a pill's label, in its chip's colours, then its step number in small grey type (Markdown:
    the token is escaped). The number keeps labels apart: Streamlit tells pills by their labels, so two steps
    that wrote the same token at the same shade were one pill, and a click on either opened the last."""
    background, colour = probability_colour(step.probability)
    return (f':color[{text.escape_markdown(step.token)}]{{foreground="{colour}" background="{background}"}} '
            f':gray[:small[{index + 1}]]')


def text_with_chips(gen: opt_lens.Generation, selected: int) -> str:
    """The prompt as plain text, then one chip per new token; all model and user text is HTML-escaped."""
    chips = []
    for index, step in enumerate(gen.steps):
        background, colour = probability_colour(step.probability)
        outline = "outline:2px solid #d62728;" if index == selected else ""
        tooltip = (f"step {index + 1} · id {step.token_id} · probability {step.probability:.1%} (rank {step.rank})"
                   f" · model's own probability {step.model_probability:.1%}")
        chips.append(
            f'<span title="{html.escape(tooltip)}" style="display:inline-block;margin:2px 1px;padding:1px 4px;'
            f'border-radius:5px;background:{background};color:{colour};{outline}font-family:monospace;'
            f'white-space:pre">{html.escape(step.token)}</span>'
        )
    prompt_text = f'<span style="color:#777;white-space:pre-wrap">{html.escape(gen.prompt.text)}</span>'
    return f'<div style="line-height:2.1">{prompt_text}{"".join(chips)}</div>'


def use_as_prompt(new_prompt: str) -> None:
    st.session_state[keys.PROMPT] = new_prompt  # the sidebar's prompt box, and through it the URL


name, prompt = state.chosen_model("model"), state.chosen_prompt()
left, middle, right = st.columns(3)
# Bound to the URL, so that a teacher's link reproduces the run; Streamlit drops a value the widget cannot take
# (the seed, whose box Streamlit cannot guard, is kept in the URL by hand: state.whole_number_box).
temperature = left.slider(
    "Temperature", 0.0, MAX_TEMPERATURE, 0.0, step=0.05, key="temperature", bind="query-params",
    help="0 always takes the most likely token. Above 0 the next token is drawn at random from the "
         "probabilities: below 1 they are sharpened towards the likely tokens, above 1 flattened towards the "
         "unlikely ones.",
)
left.caption("0 always writes the most likely token; higher values draw at random, more adventurously.")
sampling = temperature > 0
top_k = middle.select_slider(
    "Top-k", TOP_K_OPTIONS, 0, key="top_k", bind="query-params", disabled=not sampling,
    format_func=lambda k: "every token" if k == 0 else str(k),
    help="Only the k most likely tokens can be drawn; their probabilities are scaled up to add to 1.",
)
middle.caption("When drawing at random, keeps only the k most likely tokens as candidates, cutting off the long "
               "tail of odd ones.")
max_new_tokens = right.slider("New tokens", 1, MAX_NEW_TOKENS, 20, key="max_new_tokens", bind="query-params",
                              help="At most this many; the model may stop earlier with its end-of-text token.")


seed = state.whole_number_box(right, "Seed", 0, MAX_SEED, 0, "seed", disabled=not sampling,
                              help="The same seed and settings always give the same text; another seed, another "
                                   "draw.")

context = caches.shared_model(name).arch.max_positions  # loads the model, with a progress bar, on first use
# Rounded to the slider's steps: a link's 0.7300000001 and the browser's float arithmetic give the same run.
run = (name, prompt, int(max_new_tokens), round(float(temperature), 2), int(top_k) or None, int(seed))
gen = caches.shared_generation(*run)
selection.warn_if_truncated(name, gen.prompt)

st.subheader("The continuation")
if not gen.steps:
    st.info(f"The prompt already fills {text.escape_markdown(name)}'s context of {context} tokens, "
            "so there is no room for a new one. Shorten the prompt.", icon=":material/block:")
    st.stop()


def keep_a_token_picked(n_steps: int) -> None:
    """A click on the picked token would unpick it (and show step 1 with no token marked): keep it picked."""
    if st.session_state.get("step") is None:
        st.session_state.step = (teacher.url_step(st.query_params.get("step"), n_steps) or 1) - 1


@st.fragment
def continuation_view(gen: opt_lens.Generation, run: tuple) -> None:
    """The text and the chosen step's distribution (``gen``, named by ``run``: ``shared_generation``'s
    arguments): picking another step redraws only this part."""
    text_slot = st.empty()  # the prompt and its continuation, above the buttons that pick a token
    # The new tokens again, as buttons in their colours: click one to see what it was drawn from. The step
    # lives in the URL (?step=3, counted from 1; not bound, which would put the button's Markdown there); one
    # this run lacks (a link made with other settings) falls back to the first.
    asked = teacher.url_step(st.query_params.get("step"), len(gen.steps))
    picked = st.pills("Click a token to see the distribution it was drawn from", range(len(gen.steps)),
                      default=(asked or 1) - 1, key="step", format_func=lambda i: token_pill(i, gen.steps[i]),
                      on_change=keep_a_token_picked, args=(len(gen.steps),),
                      help="Shows the probabilities the model gave every candidate at that step. The small "
                           "grey number beside a token is its step.")
    index = picked if picked is not None else 0
    teacher.keep_in_url("step", str(index + 1))
    # text_with_chips escapes every token and the prompt: only the chips' own markup is HTML.
    text_slot.markdown(text_with_chips(gen, index), unsafe_allow_html=True)
    greedy = gen.temperature == 0
    st.caption(
        "Colour: the token's probability when it was chosen, from pale (unlikely) to dark green (sure)"
        + (". Temperature 0 takes the most likely token, so every chip is its step's top guess."
           if greedy else ", after temperature and top-k reshaped the model's probabilities. Hover a chip to "
                          "compare with the model's own probability.")
    )
    step = gen.steps[index]
    charts.draw(st, views.candidates_chart(*run, index), width="stretch")
    if greedy:
        st.caption(f"“{text.escape_markdown(step.token)}” had probability {step.probability:.1%}: the model's "
                   "most likely token, which temperature 0 always takes.")
    else:
        candidates = "every token" if gen.top_k is None else f"the top {gen.top_k}"
        st.caption(f"“{text.escape_markdown(step.token)}” had probability {step.probability:.1%} (rank {step.rank}) "
                   f"in what it was drawn from (temperature {gen.temperature:g}, {candidates}). The model's own "
                   f"probability for it, before temperature and top-k: {step.model_probability:.1%}.")


continuation_view(gen, run)

reasons = {
    "max_new_tokens": f"Stopped after the {len(gen.steps)} new tokens asked for.",
    "end_of_text": "Stopped because the model wrote its end-of-text token: it considers the text finished.",
}
if gen.context_full:
    st.warning(f"Stopped because {text.escape_markdown(name)}'s context is full: it reads at most "
               f"{context} tokens, so it cannot write more after this text.",
               icon=":material/block:")
else:
    st.caption(reasons[gen.stop_reason])

# A cut prompt leaves no room to write (the page stopped above), so every continuation here follows it whole.
cannot_append = (
    "The model wrote no text, only its end-of-text token." if not gen.text
    else f"The prompt would be longer than {state.MAX_PROMPT_CHARS} characters."
    if len(prompt) + len(gen.text) > state.MAX_PROMPT_CHARS
    else None
)
st.button(
    "Append to the prompt", icon=":material/add:", on_click=use_as_prompt, args=(prompt + gen.text,),
    disabled=cannot_append is not None,
    help=cannot_append or "Adds the continuation to the prompt in the sidebar, so that every page (and the next "
                          "run here) reads it. The text is tokenized again, so the tokens where prompt and "
                          "continuation meet may differ.",
)
with st.expander("Every step as a table"):
    steps = views.steps_table(*run)
    st.dataframe(steps, width="stretch", hide_index=True)
    tables.csv_button(steps, "Download the steps as CSV", "generation.csv")
