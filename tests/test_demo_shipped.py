"""The bundled demo models: small, offline, OPT's tokenizer conventions, and cards that report what the
models measure."""

import re
import socket
import sys
from pathlib import Path

import pytest

import opt_lens
from opt_lens import heads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from measure_demo_models import best_head, measure  # noqa: E402

DEMO_MODELS = opt_lens.DEMO_MODELS
GRAMMAR_TEXT = (
    "Alice saw a small cat in the garden. The dog sat on the mat. Bob gave the ball to Alice. "
    "There were three cows on the farm. Emma and Bob went to the park with the dog."
)
# (length of the repeated random run, random tokens before it), unlike the measuring script's seeds.
UNSEEN_PROBES = [(12, 0), (25, 7), (37, 15)]


@pytest.fixture(scope="module")
def demo():
    loaded = {}

    def get(name: str) -> opt_lens.LoadedModel:
        if name not in loaded:
            loaded[name] = opt_lens.load(name)
        return loaded[name]

    return get


def card_figures(name: str) -> dict:
    card = (DEMO_MODELS[name] / "README.md").read_text()
    # The first decimal after a head's name is its score ("10-40" and "0-20" in between are ranges).
    previous = re.search(r"previous-token head \*\*L(\d+)\.H(\d+)\*\*:.*?(-?\d+\.\d+)", card, re.I | re.S)
    induction = re.search(r"induction head \*\*L(\d+)\.H(\d+)\*\*:.*?(-?\d+\.\d+)", card, re.I | re.S)
    drop = re.search(r"loss on the second copy is (-?\d+\.\d+) nats below", card)
    assert previous and induction and drop, f"{name}'s card names no previous-token/induction head"
    return {"previous head": (int(previous[1]), int(previous[2])), "previous": float(previous[3]),
            "induction head": (int(induction[1]), int(induction[2])), "induction": float(induction[3]), "copying drop": float(drop[1])}


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_folder_is_small_and_has_a_card(name):
    folder = DEMO_MODELS[name]
    size = sum(path.stat().st_size for path in folder.iterdir())
    assert size <= 8 * 2**20, f"{name} takes {size:,} bytes"
    for file in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (folder / file).is_file(), f"{name} lacks {file}"
    assert "toy" in (folder / "README.md").read_text()


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_loads_offline(name, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the demo models must load without the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    lm = opt_lens.load(name)  # how long it takes: benchmarks/small_costs.py
    assert lm.source == "demo"


def test_tiny_opt_is_opt_shaped(demo):
    lm = demo("demo/tiny-opt")
    assert lm.arch.model_class == "OPTForCausalLM" and lm.arch.position_offset == 2
    assert lm.arch.norm == "pre" and lm.arch.activation == "relu"
    text = "The cat sat on the mat."
    encoded = lm.tokenizer(text, return_offsets_mapping=True)
    assert encoded["input_ids"][0] == 2, "OPT's tokenizer starts every text with </s>"
    assert lm.tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert encoded["offset_mapping"][0] == (0, 0)
    assert "".join(text[a:b] for a, b in encoded["offset_mapping"][1:]) == text


def test_tiny_gpt2_is_gpt2_shaped(demo):
    lm = demo("demo/tiny-gpt2")
    assert lm.arch.model_class == "GPT2LMHeadModel" and lm.arch.activation == "gelu_new"
    assert lm.arch.tied_embeddings and lm.arch.positional == "learned" and lm.arch.norm == "pre"
    text = "The cat sat on the mat."
    encoded = lm.tokenizer(text, return_offsets_mapping=True)
    assert lm.tokenizer.convert_ids_to_tokens(encoded["input_ids"][:1]) == ["The"], "GPT-2 prepends nothing"
    assert "".join(text[a:b] for a, b in encoded["offset_mapping"]) == text


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_model_continues_its_grammar_with_a_word(name, demo):
    lm = demo(name)
    best = opt_lens.top_k_next(lm, opt_lens.capture(lm, "The cat sat on the"), k=1)[0].token
    assert best.startswith("␣") and best[1:].isalpha(), f"{name} continues 'The cat sat on the' with {best!r}"


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_documentation_the_card_reports_what_the_model_measures(name, demo):
    figures = measure(demo(name))
    card = card_figures(name)
    assert card["previous head"] == figures.previous_token_head
    assert card["previous"] == pytest.approx(figures.previous_token_score, abs=0.006)
    assert card["induction head"] == figures.induction_head
    assert card["induction"] == pytest.approx(figures.induction_score, abs=0.006)
    assert card["copying drop"] == pytest.approx(figures.copying_loss_drop, abs=0.006)


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_the_model_shows_what_issue_3_asks_for(name, demo):
    figures = measure(demo(name))
    assert figures.previous_token_score >= 0.5, figures.summary()
    assert figures.induction_score >= 0.3, figures.summary()
    assert figures.copying_loss_drop >= 2, figures.summary()


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_the_app_head_scores_find_the_card_heads(name, demo):
    """What the Attention page's head map computes, on a prompt and probes the measuring script never saw."""
    lm, card = demo(name), card_figures(name)
    scores = heads.head_scores(lm, opt_lens.capture(lm, GRAMMAR_TEXT))
    assert best_head(scores.previous_token) == card["previous head"], scores.previous_token
    assert scores.previous_token[card["previous head"]] >= 0.5
    for seed, (length, noise) in enumerate(UNSEEN_PROBES, start=100):
        probe, start, period = heads.induction_probe(lm, length=length, seed=seed, noise=noise)
        induction = heads.induction_scores(probe.patterns, start, period)  # [layer, head]
        assert induction[card["induction head"]] >= 0.3, f"probe {length}/{noise}:\n{induction}"
        assert heads.copying_loss_drop(probe.logits, probe.input_ids, start, period) >= 2


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_documentation_the_readme_quotes_the_cards(name):
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| `{name}` |"))
    card = card_figures(name)
    for head, score in (("previous head", "previous"), ("induction head", "induction")):
        layer, index = card[head]
        assert f"L{layer}.H{index}, {card[score]:.2f}" in row, row
    assert f"{card['copying drop']:.2f} nats" in row, row


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_the_logit_lens_shows_copying_happen_in_the_last_block(name, demo):
    lm = demo(name)
    probe, start, period = heads.induction_probe(lm, length=30, seed=5, noise=3)
    second_copy = list(range(start + period, probe.seq_len - 1))  # each predicts a token seen once already
    lens = opt_lens.logit_lens_map(lm, probe, positions=second_copy)
    copied = probe.input_ids[start + period + 1:]  # [position]
    hits = (lens.top_ids == copied).float().mean(-1)  # [layer + 1]: share of positions whose top guess is the copy
    assert hits[-1] >= 0.9 and hits[:-1].max() <= 0.1, f"{name}: {hits.tolist()}"


def test_the_two_demo_models_previous_token_heads_match_each_other(demo):
    gpt2, opt = demo("demo/tiny-gpt2"), demo("demo/tiny-opt")
    cap_a, cap_b = opt_lens.capture(gpt2, GRAMMAR_TEXT), opt_lens.capture(opt, GRAMMAR_TEXT)
    matches = opt_lens.compare.match_heads(cap_a, cap_b, opt_lens.compare.align_tokens(cap_a, cap_b))
    head_a, head_b = card_figures("demo/tiny-gpt2")["previous head"], card_figures("demo/tiny-opt")["previous head"]
    assert matches.heads_b[matches.best_b[matches.heads_a.index(head_a)]] == head_b
    assert matches.top_pairs(1)[0][:2] == (head_a, head_b), matches.top_pairs(3)
