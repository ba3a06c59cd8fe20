"""The start page's guided experiments: a prompt, the page that shows it, and what to notice.

They are also the steps of the lesson (``app.lessons``). Each is written for the model in use: the demo
models have a 2,048-piece vocabulary and two layers, so some prompts and claims differ for them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import streamlit as st

import opt_lens
from app.state import chosen_model
from app.tables import head_score_table
from app.text import head_label


@dataclass(frozen=True)
class Experiment:
    """A guided first look from the start page: a prompt, the page that shows it, and what to notice."""

    title: str
    question: str
    notice: str
    page: str
    prompt: str
    head_metric: str | None = None  # open the head that scores highest on this metric, in the current model
    knock_out_metric: str | None = None  # on Cause and effect: knock out the head that scores highest on this
    demo_prompt: str | None = None  # for the bundled demo models, when the general one does not show the point
    demo_notice: str | None = None

    def for_model(self, name: str) -> Experiment:
        """This experiment as written for ``name``: the demo models get their own prompt and claims."""
        if name not in opt_lens.DEMO_MODELS:
            return self
        return dataclasses.replace(self, prompt=self.demo_prompt or self.prompt, notice=self.demo_notice or self.notice)


REPEATED_TEXT = "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp"
EXPERIMENTS = [
    Experiment(
        "A head that looks one token back",
        "Is there a head whose only job is to read the token just before each token?",
        "Its map has a bright diagonal just below the main one: every token reads the token before it.",
        "pages/attention.py", "The cat sat on the mat, and the dog sat on the rug by the door.", "previous token",
    ),
    Experiment(
        "A head that copies",
        "How can a model continue a pattern it has seen only once, earlier in the same text?",
        "The words come twice. In the second copy each token looks at the token that followed it the first "
        "time: a stripe parallel to the diagonal. That is how a model continues a pattern it has just seen.",
        "pages/attention.py", REPEATED_TEXT, "induction",
        demo_notice="The words come twice (the demo cuts the unusual ones into short pieces, which come twice too). "
                    "In the second copy each piece looks at the piece that followed it the first time: a stripe "
                    "parallel to the diagonal. That is how a model continues a pattern it has just seen.",
    ),
    Experiment(
        "A guess forming layer by layer",
        "At which layer does the model's final answer first appear, and how sure is each layer?",
        "In the logit lens, find the layer where the final guess first shows up, and how sure each layer is.",
        "pages/predictions.py", "Alice went to the park. Bob gave the ball to",
        demo_prompt="Alice went to the park. Bob gave the ball to Alice. Then Alice gave the ball to",
        demo_notice="Read the last column of the logit lens. After layer 1 the demo guesses some name from its "
                    "stories; only layer 2, whose heads copy from earlier in the prompt, gives real probability "
                    "to a name that is in the prompt.",
    ),
    Experiment(
        "Words cut into pieces",
        "Does a model read words, letters, or something in between?",
        "Rare words, emoji and other scripts take several tokens; common words take one, space included.",
        "pages/tokens.py", "Tokenizers split unbelievably long words, emoji 😀 and 日本語 into pieces.",
        demo_prompt="The cat sat on the mat. Tokenizers split unbelievably long words, emoji 😀 and 日本語 into pieces.",
        demo_notice="The demo's vocabulary has only 2,048 pieces, learned from its little stories: their words "
                    "(the, cat, sat, mat) take one token each, space included, but any other word falls apart "
                    "into short pieces or single letters, and an emoji or 日本語 into raw bytes. GPT-2's 50,257 "
                    "pieces keep most English words whole.",
    ),
    Experiment(
        "Knock out the copying head",
        "Does the model need its copying head to continue a pattern, or can other heads do the job?",
        "The text comes twice, so its second half is cheap to predict: the model copies. Knock out the head with "
        "the best copying score and the second half's loss rises only a little (demo/tiny-gpt2, L1.H2: 3.5 → 4.1 "
        "nats, where the first half costs 7.8): the other heads of layer 1 copy too. Add L1.H0, L1.H1 and L1.H3 "
        "and it climbs to 8.4 nats, as dear as text never seen.",
        "pages/cause_and_effect.py", REPEATED_TEXT, "induction", knock_out_metric="induction",
    ),
    Experiment(
        "Break the circuit upstream",
        "Which earlier head tells a copying head where to look?",
        "Knock out the previous-token head of layer 0 and look at a copying head of layer 1: its stripe fades "
        "(demo/tiny-gpt2, L0.H1 out: L1.H2's attention to the token after the earlier copy 0.61 → 0.08) and the "
        "second half's loss climbs from 3.5 to 7.5 nats. The copying heads find their place by what the "
        "previous-token head wrote: a circuit of two heads.",
        "pages/cause_and_effect.py", REPEATED_TEXT, "induction", knock_out_metric="previous token",
    ),
    Experiment(
        "What a copying head writes",
        "A copying head looks at the token after the earlier copy: does it then push that token as the next one?",
        "Pick a query in the second copy of the words (click its row on the map) and read what the head writes: "
        "the token that followed the earlier copy is among the tokens it promotes most.",
        "pages/inside.py", REPEATED_TEXT, "induction",
        demo_notice="Pick the second “␣river” as the query (click its row on the map): demo/tiny-gpt2's L1.H2 "
                    "promotes “␣lamp” most (+2.28 on its logit), the token that followed the first “␣river”. "
                    "Across the second copy that token is among its 10 most promoted at 7 of 10 positions.",
    ),
]


def best_head(scores, metric: str) -> tuple[int, int, float]:
    """(layer, head, score) of the highest score on ``metric`` in a head-score table (ties: the first head)."""
    shown = scores[scores.metric == metric]
    best = shown.loc[shown.score.idxmax()]
    return int(best["layer"]), int(best["head"]), float(best["score"])


def prepare_experiment(experiment: Experiment) -> None:
    """Put the experiment's prompt (and its best head) into the session: a button's callback, run before
    the sidebar's prompt box is drawn; the page that shows it is opened after."""
    st.session_state.prompt = experiment.prompt
    if not (experiment.head_metric or experiment.knock_out_metric):
        return
    scores = head_score_table(chosen_model("model"), experiment.prompt)
    if experiment.head_metric:
        st.session_state.layer, st.session_state.head, _ = best_head(scores, experiment.head_metric)
        st.session_state.head_metric = experiment.head_metric  # the Attention page's score map shows that score
    if experiment.knock_out_metric:
        st.session_state.knock_out = [head_label(*best_head(scores, experiment.knock_out_metric)[:2])]


def opening_query(experiment: Experiment) -> dict:
    """The URL an experiment's page opens with: the head it chose and the score it is about, since the boxes
    that hold them, bound to the URL but not drawn when it was chosen, take their first value from there (on
    Cause and effect: the heads to knock out, and the chosen head as the one to look at)."""
    query = {}
    if experiment.head_metric:
        query |= {"layer": str(st.session_state.layer), "head": str(st.session_state.head),
                  "head_metric": experiment.head_metric}
    if experiment.knock_out_metric:
        query["knock_out"] = st.session_state.knock_out
        if experiment.head_metric:
            query["look_at"] = head_label(st.session_state.layer, st.session_state.head)
    return query
