"""What the guided experiments' notes say about numbers holds for the model in use (issue 20: on gpt2 the notes
of steps 5 and 6 quoted demo/tiny-gpt2's losses and heads beside a banner that opened gpt2's L3.H3)."""

import re

import pytest
from test_app_causal import GUIDED_FIGURES

from app import experiments

KNOCK_OUT, UPSTREAM = (e for e in experiments.EXPERIMENTS if e.knock_out_metric)


@pytest.mark.parametrize("name", ["gpt2", "facebook/opt-125m", "distilgpt2", "EleutherAI/pythia-70m"])
def test_the_notes_for_any_other_model_than_the_demos_quote_no_figure_and_no_head(name):
    for experiment in experiments.EXPERIMENTS:
        notice = experiment.for_model(name).notice
        assert not re.search(r"\d", notice), (experiment.title, notice)  # no loss, no score, no L1.H2, no layer 1


def head(layer: int, index: int) -> str:
    return f"L{layer}.H{index}"


@pytest.mark.parametrize("name", list(GUIDED_FIGURES))
def test_a_demo_models_notes_quote_the_figures_measured_on_it(name):
    # GUIDED_FIGURES are measured on each demo model by tests/test_app_causal.py.
    figures = GUIDED_FIGURES[name]
    notice = KNOCK_OUT.for_model(name).notice
    others = [head(1, h) for h in range(4) if (1, h) != figures["copying"]]  # the demos have four heads a layer
    assert re.findall(r"L\d\.H\d", notice) == [head(*figures["copying"]), *others]
    assert re.findall(r"\d+\.\d+", notice) == [
        f"{figures[key]:.1f}" for key in ("second", "without_copying", "first", "without_layer_1")]
    notice = UPSTREAM.for_model(name).notice
    assert re.findall(r"L\d\.H\d", notice) == [head(*figures["previous"]), head(*figures["copying"])]
    assert re.findall(r"\d+\.\d+", notice) == [
        *(f"{value:.2f}" for value in figures["stripe"]), f"{figures['second']:.1f}", f"{figures['without_previous']:.1f}"]
