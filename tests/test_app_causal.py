"""The Cause and effect page and its view data, offline on the bundled demo models.

Expected values come from the library (or plain transformers) called directly on separately loaded models,
never from the page's own helpers.
"""

from __future__ import annotations

import types

import pytest
import torch

import opt_lens
from app import causal_views as views


@pytest.fixture(scope="module")
def gpt2():
    return opt_lens.load("demo/tiny-gpt2")


def test_heads_from_a_url_are_checked_against_the_model():
    labels = ["L1.H1", "L0.H3", "L2.H0", "L1.H4", "l1.h1", "L1.H1 ", "<b>", None, "L01.H1", "L1.H1"]
    assert views.parse_heads(labels, n_layers=2, n_heads=4) == [(0, 3), (1, 1)]
    assert views.head_options(2, 2) == ["L0.H0", "L0.H1", "L1.H0", "L1.H1"]


def test_an_answer_is_mapped_by_its_text_and_refused_when_it_is_not_one_token(gpt2):
    cake = views.answer_token(gpt2.tokenizer, " cake")
    assert cake.problem is None and cake.token_id == gpt2.tokenizer.convert_tokens_to_ids("Ġcake")
    mary = views.answer_token(gpt2.tokenizer, " Mary")  # "␣M" + "ary" in the toy vocabulary
    assert mary.token_id is None and "2 tokens" in mary.problem and "␣M + ary" in mary.problem
    assert "empty" in views.answer_token(gpt2.tokenizer, "").problem
    opt = opt_lens.load("demo/tiny-opt")
    assert views.answer_token(opt.tokenizer, " cake").token_id == opt.tokenizer.convert_tokens_to_ids("Ġcake")


def test_guesses_before_and_after_are_each_runs_own_probabilities(gpt2):
    ids = gpt2.tokenizer("The cat sat on the", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = gpt2.model(input_ids=ids).logits[0, -1]
    table = views.predictions_frame(gpt2.tokenizer, logits, -logits, k=5)  # "after": the guesses turned upside down
    probs = torch.softmax(logits.double(), -1)
    top = probs.topk(5)
    assert table["p before"].tolist() == pytest.approx(top.values.tolist())
    assert table["before"][0] == gpt2.tokenizer.convert_ids_to_tokens(int(top.indices[0])).replace("Ġ", "␣")
    assert table["same token after"].tolist() == pytest.approx(torch.softmax(-logits.double(), -1)[top.indices].tolist())
    assert table["after"][0] == gpt2.tokenizer.convert_ids_to_tokens(int(logits.argmin())).replace("Ġ", "␣")


def test_maps_become_one_row_per_cell():
    values = torch.arange(8.0).reshape(2, 4)
    frame = views.grid_frame(values, "effect")
    assert len(frame) == 8 and frame.set_index("name").loc["L1.H2", "effect"] == 6.0
    patch = views.resid_patch_frame(torch.tensor([[0.0, 0.5], [1.0, 0.25]]), ["0 a", "1 b"])
    assert patch.set_index(["stream", "position"]).loc[("after block 0", "1 b"), "restored"] == 0.25


def test_the_parts_of_an_attribution_add_up():
    attribution = types.SimpleNamespace(embed=1.5, heads=torch.tensor([[0.25, -1.0], [2.0, 0.0]]),
                                        mlps=torch.tensor([0.5, -0.25]), rest=0.125, logit=3.125)
    assert views.attribution_sum(attribution) == pytest.approx(3.125)
    parts = views.attribution_parts(attribution)
    assert parts["part"].tolist() == ["embeddings", "MLP 0", "MLP 1", "biases (rest)"]
    assert parts["logit"].tolist() == [1.5, 0.5, -0.25, 0.125]
