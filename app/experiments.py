"""The start page's guided experiments: a prompt, the page that shows it, and what to notice.

They are also the steps of the lesson (``app.lessons``). Each is written for the model in use: the demo
models have a 2,048-piece vocabulary and two layers, so some prompts and claims differ for them. A notice
quotes figures only for the model they were measured on; the general one, for every other model, names no
number and no head, since those differ from model to model.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import streamlit as st

import opt_lens
from app import keys
from app.state import chosen_model
from app.tables import head_score_table
from app.text import head_label

logger = logging.getLogger(__name__)


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
    # (demo model, notice quoting figures measured on it): tests/test_app_causal.py measures them again
    measured_notices: tuple[tuple[str, str], ...] = ()

    def for_model(self, name: str) -> Experiment:
        """This experiment as written for ``name``: the demo models get their own prompt and claims, each with
        the figures measured on it."""
        if name not in opt_lens.DEMO_MODELS:
            return self
        notice = dict(self.measured_notices).get(name) or self.demo_notice or self.notice
        return dataclasses.replace(self, prompt=self.demo_prompt or self.prompt, notice=notice)


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
        demo_notice="The demo's vocabulary has only 2,048 pieces learned from its little stories (2,049 or 2,052 "
                    "on the Architecture page, which counts its special tokens too): their words "
                    "(the, cat, sat, mat) take one token each, space included, but any other word falls apart "
                    "into short pieces or single letters, and an emoji or 日本語 into raw bytes. GPT-2's 50,257 "
                    "pieces keep most English words whole.",
    ),
    Experiment(
        "Knock out the copying head",
        "Does the model need its copying head to continue a pattern, or can other heads do the job?",
        "The text comes twice, so its second half is cheap to predict: the model copies. Knock out the head with "
        "the best copying score and compare the second half's loss before and after. If it rises only a little, "
        "other heads copy too: knock them out as well, and it climbs towards the first half's, as dear as text "
        "never seen.",
        "pages/cause_and_effect.py", REPEATED_TEXT, "induction", knock_out_metric="induction",
        measured_notices=tuple(
            (name, "The text comes twice, so its second half is cheap to predict: the model copies. Knock out the "
                   f"head with the best copying score, {copying}, and the second half's loss rises only a little "
                   f"({second} → {without} nats, where the first half costs {first}): the other heads of layer 1 "
                   f"copy too. Add {others} and it climbs to {without_layer} nats, as dear as text never seen.")
            for name, copying, first, second, without, others, without_layer in (
                ("demo/tiny-gpt2", "L1.H2", "7.8", "3.5", "4.1", "L1.H0, L1.H1 and L1.H3", "8.4"),
                ("demo/tiny-opt", "L1.H2", "8.2", "2.7", "3.8", "L1.H0, L1.H1 and L1.H3", "8.7"),
            )
        ),
    ),
    Experiment(
        "Break the circuit upstream",
        "Which earlier head tells a copying head where to look?",
        "Knock out the head with the best previous-token score and look at the best copying head (under “A head's "
        "attention, before and after”). If its stripe fades and the second half's loss climbs, the copying head "
        "finds its place by what the previous-token head wrote: a circuit of two heads, which needs the "
        "previous-token head in an earlier layer than the copying head.",
        "pages/cause_and_effect.py", REPEATED_TEXT, "induction", knock_out_metric="previous token",
        measured_notices=tuple(
            (name, f"Knock out the previous-token head of layer 0, {previous}, and look at the copying head "
                   f"{copying}: its stripe fades (its attention to the token after the earlier copy: {stripe}) and "
                   f"the second half's loss climbs from {second} to {without} nats. The copying heads find their "
                   "place by what the previous-token head wrote: a circuit of two heads.")
            for name, previous, copying, stripe, second, without in (
                ("demo/tiny-gpt2", "L0.H1", "L1.H2", "0.61 → 0.08", "3.5", "7.5"),
                ("demo/tiny-opt", "L0.H2", "L1.H2", "0.63 → 0.01", "2.7", "7.6"),
            )
        ),
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


def prepare_experiment(experiment: Experiment) -> dict:
    """Put the experiment's prompt and the settings of its page's boxes (its best head, the score it is
    about, the heads to knock out) into the session, and return those settings.

    Run before the boxes are drawn: by a button's callback, or by the frame when a lesson link opens. A model
    that cannot load leaves the head settings out; the page that needs the model then says why.
    """
    st.session_state[keys.PROMPT] = experiment.prompt
    if not (experiment.head_metric or experiment.knock_out_metric):
        return {}
    try:
        scores = head_score_table(chosen_model(keys.MODEL), experiment.prompt)
    except opt_lens.OptLensError as error:
        logger.info("The experiment opens without its head: %s", error)
        return {}
    if experiment.knock_out_metric:  # on Cause and effect: knock out one head, look at the step's head
        layer, head, _ = best_head(scores, experiment.head_metric or experiment.knock_out_metric)
        settings = {keys.KNOCK_OUT: [head_label(*best_head(scores, experiment.knock_out_metric)[:2])],
                    keys.LOOK_AT: head_label(layer, head)}
    else:  # the head; on Attention also the score map showing the score the step is about
        layer, head, _ = best_head(scores, experiment.head_metric)
        settings = {keys.LAYER: layer, keys.HEAD: head}
        if experiment.page == "pages/attention.py":
            settings[keys.HEAD_METRIC] = experiment.head_metric
    st.session_state.update(settings)
    return settings


def opening_query(settings: dict) -> dict:
    """The settings of a page's boxes as its URL: a box not drawn yet takes its first value from there."""
    return {key: value if isinstance(value, list) else str(value) for key, value in settings.items()}
