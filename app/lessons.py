"""A lesson: the guided experiments walked in order, one step at a time, the step number in the URL.

Each step opens its experiment (prompt, page, for a head its best head in the model in use) and puts a
banner at the top of the page: the step's question, what to notice in this model, and for a head its score,
with a warning when even the best head scores too low to show the mechanism.
"""

from __future__ import annotations

import streamlit as st

import opt_lens
from app import keys, teacher

LESSON_KEY = keys.LESSON
WEAK_SCORE = 0.3  # below this, the "best" head is not doing the job the step is about
CLOSE_SCORE = 0.05  # heads within this of the best are named too: the best is then one of several


def steps() -> list:
    from app.experiments import EXPERIMENTS  # the start page's experiments are the lesson's steps

    return EXPERIMENTS


def step_param(value) -> int | None:
    """A lesson step number from the URL, or None when it is missing or not a step."""
    return teacher.url_step(value, len(steps()))


def init() -> None:
    """Read the step from the URL once per session. A link without a prompt opens the step as its buttons
    do: its prompt and settings, on its own page (``/attention?lesson=5`` opens Cause and effect)."""
    if LESSON_KEY in st.session_state:
        return
    step = st.session_state[LESSON_KEY] = step_param(st.query_params.get(LESSON_KEY))
    if step and keys.PROMPT not in st.query_params:
        open_step(step, first_run=True)


def sync_url() -> None:
    from app.teacher import keep_in_url

    step = st.session_state.get(LESSON_KEY)
    keep_in_url(LESSON_KEY, str(step) if step else None)


def open_step(step: int, first_run: bool = False) -> None:
    """Step ``step`` (1-based) becomes the current one: its prompt and the settings of its page's boxes go
    into the session before any box is drawn (in a button's callback), and its page is asked for (the
    frame's next run stays on the page when it is the step's).

    A link's step opens in the session's ``first_run``, when no box is bound to the URL yet: its page opens
    at once, with a URL that also carries the link's sidebar settings and the step's prompt (a later switch
    cannot name them, see ``navigation.keep_sidebar_in_url``), so the address bar holds the whole view.
    """
    from app.experiments import opening_query, prepare_experiment
    from app.navigation import ask_to_open, open_page
    from app.state import chosen_model
    from app.teacher import NOTE_KEY

    st.session_state[LESSON_KEY] = step
    experiment = steps()[step - 1].for_model(chosen_model(keys.MODEL))
    settings = prepare_experiment(experiment)
    note = st.session_state.get(NOTE_KEY)
    query = {**opening_query(settings), LESSON_KEY: str(step), **({NOTE_KEY: note} if note else {})}
    if not first_run:
        ask_to_open(experiment.page, query)
        return
    sidebar = {key: st.query_params[key] for key in keys.SIDEBAR if key in st.query_params}
    open_page(experiment.page, {**query, **sidebar, keys.PROMPT: experiment.prompt})


def step_button(label: str, step: int, key: str, **kwargs) -> None:
    """A button that opens step ``step``."""
    st.button(label, key=key, on_click=open_step, args=(step,), **kwargs)


def head_finding(name: str, prompt: str, metric: str) -> tuple[str, bool]:
    """What the step's head scores in this model (and which heads score almost as high), and whether that is
    too weak to show the mechanism."""
    from app.experiments import best_head
    from app.tables import head_score_table

    scores = head_score_table(name, prompt)
    layer, head, score = best_head(scores, metric)
    text = (f"In {escape(name)}, the head with the highest {metric} score is layer {layer}, head {head}: "
            f"{score:.2f} (1 would be a perfect {metric} head).")
    close = scores[(scores["metric"] == metric) & (scores["score"] >= score - CLOSE_SCORE)
                   & ~((scores["layer"] == layer) & (scores["head"] == head))]
    if score >= WEAK_SCORE and len(close):
        others = ", ".join(f"layer {row.layer}, head {row.head} ({row.score:.2f})" for row in close.itertuples())
        text += f" Almost as high: {others}. This model has several heads doing this job."
    return text, score < WEAK_SCORE


def head_caption(name: str, prompt: str, metric: str) -> None:
    """The step's head finding, warning when it is weak. A model that cannot load gives none: the page
    below says what is wrong, and the banner keeps its buttons."""
    try:
        text, weak = head_finding(name, prompt, metric)
    except opt_lens.OptLensError:
        return
    st.caption(text)
    if weak:
        st.warning(f"No head of {escape(name)} scores above {WEAK_SCORE} on this: the head opened below is "
                   f"only the least weak, not a real {metric} head. Try another model.", icon=":material/warning:")


def step_page_title(step: int) -> str:
    """The title of step ``step``'s page, to tell whether the banner is on that page."""
    from app.navigation import PAGE_TITLES

    return PAGE_TITLES[steps()[step - 1].page]


def banner(page_title: str | None = None) -> None:
    """The current step at the top of the page (``page_title``), with buttons to move on; nothing outside a
    lesson. On another page than the step's, a button leads back to it."""
    step = st.session_state.get(LESSON_KEY)
    if st.session_state.pop("_lesson_done", False):
        st.success("That was the last step of the lesson. Every page stays open to explore; the start page "
                   "can run the lesson again.", icon=":material/school:")
    if not step:
        return
    total = len(steps())
    from app.state import chosen_model, chosen_prompt

    name = chosen_model("model")
    experiment = steps()[step - 1].for_model(name)
    with st.container(border=True, key="lesson-banner"):
        st.markdown(f"**Lesson, step {step} of {total}: {experiment.title}**")
        st.progress(step / total)
        st.markdown(f"**Question:** {experiment.question}")
        st.markdown(f"**What to notice:** {experiment.notice}")
        if experiment.head_metric:
            head_caption(name, chosen_prompt(), experiment.head_metric)
        if page_title is not None and page_title != step_page_title(step):
            step_button(f"Back to this step's page: {step_page_title(step)}", step, "lesson-here",
                        icon=":material/undo:")
        back, forward, leave = st.columns(3)
        if step > 1:
            with back:
                step_button("Previous step", step - 1, "lesson-back", icon=":material/arrow_back:")
        if step < total:
            with forward:
                step_button("Next step", step + 1, "lesson-next", icon=":material/arrow_forward:", type="primary")
            leave.button("Leave the lesson", icon=":material/close:", key="lesson-leave", on_click=finish)
        else:
            forward.button("Finish the lesson", icon=":material/check:", type="primary", key="lesson-finish",
                           on_click=finish)


def finish() -> None:
    """A button's callback: the lesson ends (the page stays)."""
    st.session_state[LESSON_KEY] = None
    st.session_state["_lesson_done"] = True


def escape(text: str) -> str:
    from app.text import escape_markdown

    return escape_markdown(text)
