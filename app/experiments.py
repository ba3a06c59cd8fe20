"""The start page's guided experiments: a prompt, the page that shows it, and what to notice."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app.causal_views import head_label
from app.state import chosen_model
from app.tables import head_score_table


@dataclass(frozen=True)
class Experiment:
    """A guided first look from the start page: a prompt, the page that shows it, and what to notice."""

    title: str
    notice: str
    page: str
    prompt: str
    head_metric: str | None = None  # open the head that scores highest on this metric, in the current model
    knock_out_metric: str | None = None  # on Cause and effect: knock out the head that scores highest on this


REPEATED_TEXT = "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp"
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
        "pages/attention.py", REPEATED_TEXT, "induction",
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
    Experiment(
        "Knock out the copying head",
        "The text comes twice, so its second half is cheap to predict: the model copies. Knock out the head with "
        "the best copying score and the second half's loss rises only a little (demo/tiny-gpt2, L1.H2: 3.5 → 4.1 "
        "nats, where the first half costs 7.8): the other heads of layer 1 copy too. Add L1.H0, L1.H1 and L1.H3 "
        "and it climbs to 8.4 nats, as dear as text never seen.",
        "pages/cause_and_effect.py", REPEATED_TEXT, "induction", knock_out_metric="induction",
    ),
    Experiment(
        "Break the circuit upstream",
        "Knock out the previous-token head of layer 0 and look at a copying head of layer 1: its stripe fades "
        "(demo/tiny-gpt2, L0.H1 out: L1.H2's attention to the token after the earlier copy 0.61 → 0.08) and the "
        "second half's loss climbs from 3.5 to 7.5 nats. The copying heads find their place by what the "
        "previous-token head wrote: a circuit of two heads.",
        "pages/cause_and_effect.py", REPEATED_TEXT, "induction", knock_out_metric="previous token",
    ),
]


def prepare_experiment(experiment: Experiment) -> None:
    """Put the experiment's prompt (and its best head) into the session: a button's callback, run before
    the sidebar's prompt box is drawn; the page that shows it is opened after."""
    st.session_state.prompt = experiment.prompt
    if experiment.head_metric:
        st.session_state.layer, st.session_state.head = best_head(experiment.head_metric, experiment.prompt)
        st.session_state.head_metric = experiment.head_metric  # the Attention page's score map shows that score
    if experiment.knock_out_metric:
        st.session_state.knock_out = [head_label(*best_head(experiment.knock_out_metric, experiment.prompt))]


def best_head(metric: str, prompt: str) -> tuple[int, int]:
    """The (layer, head) of the model in use that scores highest on ``metric``."""
    scores = head_score_table(chosen_model("model"), prompt)
    best = scores[scores.metric == metric].sort_values("score").iloc[-1]
    return int(best["layer"]), int(best["head"])


def opening_query(experiment: Experiment) -> dict:
    """The URL an experiment's page opens with: the head it chose, since the Layer and Head boxes, bound to
    the URL but not drawn when it was chosen, take their first value from there (on Cause and effect: the
    heads to knock out, and the chosen head as the one to look at)."""
    query = {}
    if experiment.head_metric:
        query |= {"layer": str(st.session_state.layer), "head": str(st.session_state.head)}
    if experiment.knock_out_metric:
        query["knock_out"] = st.session_state.knock_out
        if experiment.head_metric:
            query["look_at"] = head_label(st.session_state.layer, st.session_state.head)
    return query
