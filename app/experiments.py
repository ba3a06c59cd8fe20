"""The start page's guided experiments: a prompt, the page that shows it, and what to notice."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app.tables import head_score_table


@dataclass(frozen=True)
class Experiment:
    """A guided first look from the start page: a prompt, the page that shows it, and what to notice."""

    title: str
    notice: str
    page: str
    prompt: str
    head_metric: str | None = None  # open the head that scores highest on this metric, in the current model


EXPERIMENTS = [
    Experiment(
        "A head that looks one token back",
        "Its map has a bright diagonal just below the main one: every token reads the token before it.",
        "pages/attention.py", "The cat sat on the mat, and the dog sat on the rug by the door.", "previous token",
    ),
    Experiment(
        "A head that copies",
        "The words come twice. In the second copy each token looks at the token that followed it the first "
        "time: a stripe parallel to the diagonal. That is how a model continues a pattern it has just seen.",
        "pages/attention.py", "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp",
        "induction",
    ),
    Experiment(
        "A guess forming layer by layer",
        "In the logit lens, find the layer where the final guess first shows up, and how sure each layer is.",
        "pages/predictions.py", "Alice went to the park. Bob gave the ball to",
    ),
    Experiment(
        "Words cut into pieces",
        "Rare words, emoji and other scripts take several tokens; common words take one, space included.",
        "pages/tokens.py", "Tokenizers split unbelievably long words, emoji 😀 and 日本語 into pieces.",
    ),
]


def start_experiment(experiment: Experiment) -> None:
    """Put the experiment's prompt (and its best head) into the session and open its page."""
    st.session_state.prompt = experiment.prompt
    if experiment.head_metric:
        scores = head_score_table(st.session_state.model, experiment.prompt)
        best = scores[scores.metric == experiment.head_metric].sort_values("score").iloc[-1]
        st.session_state.layer, st.session_state.head = int(best["layer"]), int(best["head"])
        st.session_state.head_metric = experiment.head_metric  # the Attention page's score map shows that score
    st.switch_page(experiment.page)
