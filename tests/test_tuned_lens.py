"""The tuned lens: read-outs checked against an independent computation from the params.pt tensors, the
published format both ways, loading through a stand-in Hub, the shipped demo lenses, and the Predictions page."""

import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants

import opt_lens
from opt_lens import tuned

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from demo_corpus import corpus  # noqa: E402
from test_app import app, chart_rows, charts, open_page  # noqa: E402

SPACE = "spaces/AlignmentResearch/tuned-lens"  # how the stand-in names the Space in its URLs
# The fields of the tuned-lens package's TunedLensConfig, and the published configs' misspelt hash key.
PUBLISHED_CONFIG = {"base_model_name_or_path": None, "d_model": None, "num_hidden_layers": None, "bias": True,
                    "base_model_revision": "e7da7f221d5bf496a48136c0cd264e630fe9fcc8", "unemebd_hash": "608e5024",
                    "lens_type": "linear_tuned_lens"}
TEXT = "Alice went to the park. Bob gave the ball to Alice. The cat sat on the"


def translators(n_layers: int, d_model: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random translators, large enough to move every read-out, keyed as the tuned-lens package saves them."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(n_layers):
        state[f"{i}.weight"] = torch.randn(d_model, d_model, generator=generator) * 0.2
        state[f"{i}.bias"] = torch.randn(d_model, generator=generator) * 0.5
    return state


def write_published(folder: Path, base: str, n_layers: int, d_model: int, state=None, **config) -> Path:
    """A lens folder as the tuned-lens package writes one (json.dump of its config, torch.save of its state)."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = PUBLISHED_CONFIG | {"base_model_name_or_path": base, "d_model": d_model, "num_hidden_layers": n_layers}
    (folder / "config.json").write_text(json.dumps(fields | config))
    torch.save(translators(n_layers, d_model) if state is None else state, folder / "params.pt")
    return folder


def final_norm_and_unembedding(lm):
    """The model's final layer norm and unembedding matrix, found by their transformers names."""
    model = lm.model
    norm = model.transformer.ln_f if hasattr(model, "transformer") else model.model.decoder.final_layer_norm
    return norm, model.lm_head.weight


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_the_read_out_is_the_final_norm_of_h_plus_a_h_plus_b_times_the_unembedding(kind, tiny_lm, tmp_path):
    lm = tiny_lm(kind)
    folder = write_published(tmp_path / "lens", f"someone/tiny-{kind}", lm.arch.n_layers, lm.arch.d_model)
    lens = opt_lens.tuned_lens(lm, folder)
    state = torch.load(folder / "params.pt", weights_only=True)
    cap = opt_lens.capture(lm, TEXT)
    with lm.lock, torch.no_grad():  # a plain forward pass: the block inputs and the logits, from transformers
        out = lm.model(cap.input_ids[None], output_hidden_states=True)
    norm, unembedding = final_norm_and_unembedding(lm)
    for position in (3, cap.seq_len - 1):
        got = opt_lens.tuned_lens_map(lm, cap, lens, position=position)
        expected = []
        for i in range(lm.arch.n_layers):
            h = out.hidden_states[i][0, position]
            moved = h + F.linear(h, state[f"{i}.weight"], state[f"{i}.bias"])
            expected.append(F.layer_norm(moved, (lm.arch.d_model,), norm.weight, norm.bias, norm.eps) @ unembedding.T)
        expected.append(out.logits[0, position])  # the last layer: no translator, the model's own logits
        expected = torch.stack(expected)
        assert got.shape == (lm.arch.n_layers + 1, lm.arch.vocab_size)
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
        # The lens map's top guesses are the same read-out's.
        assert opt_lens.logit_lens_map(lm, cap, [position], lens=lens).top_ids[:, 0].tolist() == expected.argmax(-1).tolist()


def test_a_lens_trained_here_is_saved_in_the_published_format_and_loads_back(tiny_lm, tmp_path):
    lm = tiny_lm("gpt2")
    texts = ["The cat sat on the mat.", "Bob gave the ball to Alice and went home."]
    reported = []
    trained = opt_lens.train_tuned_lens(lm, texts, steps=3, batch=32, progress=lambda *step: reported.append(step))
    assert [step[:2] for step in reported] == [(1, 3), (2, 3), (3, 3)] and all(step[2] > 0 for step in reported)
    again = opt_lens.train_tuned_lens(lm, texts, steps=3, batch=32)
    assert torch.equal(trained.weight, again.weight) and torch.equal(trained.bias, again.bias)  # deterministic
    assert trained.weight.abs().max() > 0  # it moved away from the identity it starts from
    folder = opt_lens.save_tuned_lens(trained, tmp_path / "lens")
    config = json.loads((folder / "config.json").read_text())
    assert set(config) == set(PUBLISHED_CONFIG) - {"unemebd_hash"} | {"unembed_hash"}
    assert (config["d_model"], config["num_hidden_layers"], config["lens_type"]) == (64, 3, "linear_tuned_lens")
    state = torch.load(folder / "params.pt", weights_only=True)
    assert set(state) == {f"{i}.{part}" for i in range(3) for part in ("weight", "bias")}
    loaded = opt_lens.tuned_lens(lm, folder)
    assert torch.equal(loaded.weight, trained.weight) and torch.equal(loaded.bias, trained.bias)
    with pytest.raises(opt_lens.OptLensError, match="made for a model with 3 layers 64 wide"):
        opt_lens.tuned_lens_map(opt_lens.load("demo/tiny-gpt2"), opt_lens.capture(lm, "a b"), loaded)


@pytest.mark.parametrize("keys", ["as saved by TunedLens.save", "with the layer_translators. prefix", "without biases"])
def test_a_folder_in_the_tuned_lens_packages_own_layout_loads(keys, tiny_lm, tmp_path):
    lm = tiny_lm("opt")
    state = translators(3, 64, seed=1)
    config = {}
    if keys == "with the layer_translators. prefix":
        state = {f"layer_translators.{key}": value for key, value in state.items()}
    if keys == "without biases":
        state = {key: value for key, value in state.items() if key.endswith("weight")}
        config = {"bias": False}
    folder = write_published(tmp_path / "lens", "facebook/opt-125m", 3, 64, state, **config)
    lens = opt_lens.tuned_lens(lm, folder)
    assert torch.equal(lens.weight[2], translators(3, 64, seed=1)["2.weight"])
    expected_bias = torch.zeros(64) if keys == "without biases" else translators(3, 64, seed=1)["2.bias"]
    assert torch.equal(lens.bias[2], expected_bias) and lens.base_model == "facebook/opt-125m"


# --- Through the Hub ---------------------------------------------------------------------------------------


def as_hub_model(lm, name: str):
    """The tiny model as if loaded from the Hub under ``name`` (only the lens lookup reads these two fields)."""
    return dataclasses.replace(lm, name=name, source="hub")


def serve_lens(hub, tmp_path: Path, folder_in_space: str, **kwargs) -> Path:
    space = tmp_path / "space"
    hub.add(SPACE, space)
    return write_published(space / "lens" / folder_in_space, kwargs.pop("base", "someone/tiny-gpt2"), 3, 64, **kwargs)


def test_a_published_lens_downloads_and_then_loads_from_the_cache_offline(hub_answering, tiny_lm, tmp_path):
    lm = as_hub_model(tiny_lm("gpt2"), "someone/tiny-gpt2")
    serve_lens(hub_answering, tmp_path, "someone/tiny-gpt2")
    lens = opt_lens.tuned_lens(lm)
    assert lens.source == "hub" and torch.equal(lens.weight[1], translators(3, 64)["1.weight"])
    assert f"GET /{SPACE}/resolve/main/lens/someone/tiny-gpt2/params.pt" in hub_answering.requests
    hub_answering.stop()  # the Hub goes away: the lens fetched before still loads
    assert torch.equal(opt_lens.tuned_lens(lm).bias, lens.bias)


def test_the_spaces_older_layout_by_the_models_short_name_loads_when_its_config_names_the_model(hub_answering, tiny_lm,
                                                                                             tmp_path):
    serve_lens(hub_answering, tmp_path, "tiny-gpt2")
    assert opt_lens.tuned_lens(as_hub_model(tiny_lm("gpt2"), "someone/tiny-gpt2")).source == "hub"
    serve_lens(hub_answering, tmp_path, "tiny-opt", base="gpt2-large")  # a lens for another model: not taken
    assert opt_lens.tuned_lens(as_hub_model(tiny_lm("opt"), "someone/tiny-opt")) is None


def test_a_model_without_a_published_lens_has_none(hub_answering, tiny_lm, tmp_path):
    lm = as_hub_model(tiny_lm("gpt2"), "someone/tiny-gpt2")
    assert opt_lens.tuned_lens(lm) is None  # the Space itself is not there
    serve_lens(hub_answering, tmp_path, "someone/other-model")
    assert opt_lens.tuned_lens(lm) is None  # the Space has lenses, not this one


@pytest.mark.parametrize("damage, message", [
    ("corrupted", "could not be read: it may be corrupt"),
    ("narrower", "The tuned lens of someone/tiny-gpt2 holds 0.weight as (32, 32), not (64, 64): it was made for another model"),
    ("deeper", "was made for a model with 12 layers 64 wide"),
    ("one layer short", "does not fit 3 layers: it lacks 2.weight"),
    ("not numbers", "values that are not numbers"),
])
def test_a_bad_lens_on_the_hub_is_refused_with_a_clear_message(damage, message, hub_answering, tiny_lm, tmp_path):
    state = {"narrower": translators(3, 32), "one layer short": translators(2, 64)}.get(damage)
    if damage == "not numbers":
        state = translators(3, 64) | {"1.bias": torch.full((64,), float("nan"))}
    folder = serve_lens(hub_answering, tmp_path, "someone/tiny-gpt2", state=state)
    if damage == "corrupted":
        (folder / "params.pt").write_bytes((folder / "params.pt").read_bytes()[:5000])  # cut short
    if damage == "deeper":
        (folder / "config.json").write_text(json.dumps(PUBLISHED_CONFIG | {
            "base_model_name_or_path": "someone/tiny-gpt2", "d_model": 64, "num_hidden_layers": 12}))
    with pytest.raises(opt_lens.OptLensError, match=re.escape(message)):
        opt_lens.tuned_lens(as_hub_model(tiny_lm("gpt2"), "someone/tiny-gpt2"))


def test_a_lens_file_far_larger_than_the_model_needs_is_refused_before_it_downloads(hub_answering, tiny_lm, tmp_path):
    folder = serve_lens(hub_answering, tmp_path, "someone/tiny-gpt2")
    (folder / "params.pt").write_bytes(b"\0" * 3_000_000)  # a lens for this model is 50 kB
    with pytest.raises(opt_lens.OptLensError, match=r"params\.pt of the tuned lens of someone/tiny-gpt2 is 3\.0 MB, far more than it can be"):
        opt_lens.tuned_lens(as_hub_model(tiny_lm("gpt2"), "someone/tiny-gpt2"))
    assert not [r for r in hub_answering.requests if r.startswith("GET") and r.endswith("params.pt")]


def test_an_unreachable_hub_fails_fast_with_a_clear_message(hub_unreachable, tiny_lm):
    start = time.perf_counter()
    with pytest.raises(opt_lens.OptLensError, match="Cannot reach the Hugging Face Hub to download the tuned lens of gpt2"):
        opt_lens.tuned_lens(as_hub_model(tiny_lm("gpt2"), "gpt2"))
    assert time.perf_counter() - start < 5


def test_a_hanging_hub_fails_with_a_clear_message_within_the_model_loading_limit(hub_hanging, tiny_lm, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_ETAG_TIMEOUT", 1)  # as test_hostile's hanging model load
    start = time.perf_counter()
    with pytest.raises(opt_lens.OptLensError, match="Cannot reach the Hugging Face Hub"):
        opt_lens.tuned_lens(as_hub_model(tiny_lm("gpt2"), "facebook/opt-125m"))
    assert time.perf_counter() - start < 10


def test_a_local_source_without_a_lens_is_refused(tiny_lm, tmp_path):
    with pytest.raises(opt_lens.OptLensError, match="holds no tuned lens"):
        opt_lens.tuned_lens(tiny_lm("gpt2"), tmp_path)
    assert opt_lens.tuned_lens(tiny_lm("gpt2")) is None  # a local model folder without tuned_lens/ beside it


# --- The shipped demo lenses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(opt_lens.DEMO_MODELS))
def test_the_shipped_lens_reads_the_middle_layer_closer_to_the_final_answer_on_held_out_text(name):
    lm = opt_lens.load(name)
    lens = opt_lens.tuned_lens(lm)
    folder = opt_lens.DEMO_MODELS[name] / "tuned_lens"
    assert lens.source == "demo" and (folder / "params.pt").stat().st_size < 300_000
    middle = lm.arch.n_layers // 2
    logit_kl, tuned_kl = [], []
    for text in corpus(30, seed=7):  # neither the models' stories (seed 1234) nor the lenses' (2023)
        cap = opt_lens.capture(lm, text)
        final = torch.log_softmax(cap.logits.double(), dim=-1)  # [seq, vocab]
        for through, kls in ((None, logit_kl), (lens, tuned_kl)):
            h = cap.resid[middle]
            if through is not None:
                state = torch.load(folder / "params.pt", weights_only=True)
                h = h + F.linear(h, state[f"{middle}.weight"], state[f"{middle}.bias"])
            read = torch.log_softmax(opt_lens.readout(lm, h).double(), dim=-1)  # [seq, vocab]
            kls.append((final.exp() * (final - read)).sum(-1))
    logit_kl, tuned_kl = torch.cat(logit_kl).mean().item(), torch.cat(tuned_kl).mean().item()
    assert tuned_kl < 0.5 * logit_kl, (logit_kl, tuned_kl)  # measured: 0.47 nats against 0.10


# --- The Predictions page ------------------------------------------------------------------------------------

PAGE = "pages/predictions.py"


def lens_rows(at) -> list[dict]:
    return next(chart_rows(c) for c in charts(at) if "how far each layer is" in json.loads(c.proto.spec).get("title", ""))


def test_the_predictions_page_reads_a_demo_model_through_its_tuned_lens():
    at = open_page(app(model="demo/tiny-opt", lens="tuned lens", prompt=TEXT), PAGE)
    assert not at.exception and not at.error
    lm = opt_lens.load("demo/tiny-opt")
    cap = opt_lens.capture(lm, TEXT)
    tuned_map = opt_lens.logit_lens_map(lm, cap, list(range(cap.seq_len - 16, cap.seq_len)), lens=opt_lens.tuned_lens(lm))
    grid = chart_rows(charts(at)[1])
    last = [row["guess"] for row in grid if row["position"].startswith(f"{cap.seq_len - 1} ")]
    assert sorted(last) == sorted(column[-1] for column in tuned_map.top_tokens)  # the grid is the tuned lens's
    rows = lens_rows(at)
    assert {row["lens"] for row in rows} == {"logit lens", "tuned lens"}
    kl = {(row["lens"], row["layer"]): row["KL"] for row in rows}
    assert kl[("tuned lens", 1)] < kl[("logit lens", 1)] and kl[("tuned lens", 2)] == 0
    assert any("lens says" in m.value or "same top guess" in m.value for m in at.markdown)


def test_a_link_naming_no_lens_is_ignored_with_a_note():
    at = open_page(app(lens="x-ray"), PAGE)
    assert not at.exception and not at.error
    assert any("asked for the lens “x\\-ray”" in c.value for c in at.caption)
    assert "lens" not in at.query_params


def test_the_predictions_page_says_when_a_model_has_no_tuned_lens_and_keeps_the_logit_lens(hub_answering):
    at = open_page(app(model="someone/tiny-opt", lens="tuned lens"), PAGE)
    assert not at.exception and not at.error
    assert any("There is no tuned lens for someone/tiny\\-opt" in i.value for i in at.info)
    assert any("so the map shows the logit lens" in c.value for c in at.caption)
    assert {row["lens"] for row in lens_rows(at)} == {"logit lens"}


def test_the_compare_page_shows_both_lenses_for_both_models_in_the_pages_colours():
    at = open_page(app(model="demo/tiny-gpt2", model_b="demo/tiny-opt"), "pages/compare.py")
    assert not at.exception and not at.error
    chart = next(c for c in charts(at) if "through both lenses" in json.loads(c.proto.spec).get("title", ""))
    rows = chart_rows(chart)
    assert {(row["model"], row["lens"]) for row in rows} == {
        (name, lens) for name in opt_lens.DEMO_MODELS for lens in ("logit lens", "tuned lens")}
    assert "#1f77b4" in chart.proto.spec and "#e8710a" in chart.proto.spec  # model A blue, model B orange
    assert sum("lens says" in m.value or "same top guess" in m.value for m in at.markdown) == 2


def test_where_the_lenses_agree_after_the_embeddings_the_page_does_not_claim_every_layer():
    # On the repeated text tiny-gpt2's two lenses differ at row 0 ("␣lamp" against ".") and agree at layer 1
    # ("␣cost"): the page said "the same top guess at every layer", and nothing of the KL gap at layer 1.
    repeated = "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp"
    at = open_page(app(model="demo/tiny-gpt2", lens="tuned lens", prompt=repeated), PAGE)
    assert not at.exception and not at.error
    kl = {(row["lens"], row["layer"]): row for row in lens_rows(at)}
    assert kl[("logit lens", 0)]["guess"] != kl[("tuned lens", 0)]["guess"]
    assert kl[("logit lens", 1)]["guess"] == kl[("tuned lens", 1)]["guess"]
    sentence = next(m.value for m in at.markdown if "same top guess" in m.value)
    assert "at every layer after the embeddings;" in sentence
    assert (f"layer 1 is from the final distribution: {kl[('logit lens', 1)]['KL']:.2f} nats through the logit lens, "
            f"{kl[('tuned lens', 1)]['KL']:.2f} through the tuned lens") in sentence


def test_the_compare_chart_s_lens_legend_draws_dashed_and_solid_lines():
    at = open_page(app(model="demo/tiny-gpt2", model_b="demo/tiny-opt"), "pages/compare.py")
    chart = next(c for c in charts(at) if "through both lenses" in json.loads(c.proto.spec).get("title", ""))
    line = next(layer for layer in json.loads(chart.proto.spec)["layer"] if "strokeDash" in layer["encoding"])
    # On a line with points the lens legend drew filled points: the dashed and the solid lens as the same dot,
    # and as strokes, transparent ones (the browser showed no symbol at all).
    assert line["mark"]["type"] == "line" and "point" not in line["mark"]
    legend = line["encoding"]["strokeDash"]["legend"]
    assert legend["symbolType"] == "stroke" and legend["symbolStrokeColor"]
