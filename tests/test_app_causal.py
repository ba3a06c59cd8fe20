"""The Cause and effect page and its view data, offline on the bundled demo models.

Expected values come from the library (or plain transformers) called directly on separately loaded models,
never from the page's own helpers.
"""

from __future__ import annotations

import json
import types

import pytest
import torch
from streamlit.testing.v1 import AppTest

import opt_lens
from app import causal_views as views
from app import experiments
from test_app import TIMEOUT, app, assert_clean, chart_rows, chart_title, charts, open_page

PAGE = "pages/cause_and_effect.py"
REPEATED = "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp"


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


# ------------------------------------------------------------------------------------------------ page


def chart(at, title_part: str):
    return next(c for c in charts(at) if title_part in str(chart_title(c)))


def test_the_page_runs_clean_and_draws_every_section():
    at = open_page(app(), PAGE)
    assert_clean(at)
    assert at.title[0].value == "Cause and effect"
    headers = " ".join(h.value for h in at.header)
    for section in ("Knock out heads", "Which heads matter", "Who writes the answer", "Patching", "Two models"):
        assert section in headers
    # Offline, the patching example is the one the demo models can do: its two maps are drawn.
    assert chart(at, "patching the residual stream") and chart(at, "patching one head")


def test_knocking_out_the_induction_head_raises_the_second_copy_loss_by_the_librarys_numbers():
    at = open_page(app(prompt=REPEATED, knock_out=["L1.H1"]), PAGE)
    assert_clean(at)
    assert at.multiselect[0].value == ["L1.H1"]
    rows = chart_rows(chart(at, "loss of each next token"))
    shown = {run: [r["loss"] for r in rows if r["run"] == run] for run in ("before", "after")}

    alone = opt_lens.load("demo/tiny-gpt2")  # a separate model object, as a student alone would get
    before = opt_lens.token_losses(opt_lens.capture(alone, REPEATED))
    after = opt_lens.token_losses(opt_lens.capture(alone, REPEATED, ablate=[(1, 1)]))
    assert shown["before"] == pytest.approx(before.tolist(), abs=1e-5)
    assert shown["after"] == pytest.approx(after.tolist(), abs=1e-5)
    half = len(before) // 2
    # Measured: the second copy costs 3.48 nats, 3.93 without L1.H1 (its other layer-1 heads still copy).
    assert float(after[half:].mean()) > float(before[half:].mean()) + 0.3
    second = next(m for m in at.metric if m.label == "Mean loss, second half")
    assert second.value == f"{float(after[half:].mean()):.2f} nats"


def test_an_mlp_layer_knocked_out_from_the_url_changes_the_run_by_the_librarys_numbers():
    at = open_page(app(prompt=REPEATED, knock_out=["L1.H3"], knock_out_mlps=["MLP 0"], ablate_with="mean"), PAGE)
    assert_clean(at)
    assert next(m for m in at.multiselect if m.key == "knock_out_mlps").value == ["MLP 0"]
    rows = chart_rows(chart(at, "loss of each next token"))
    alone = opt_lens.load("demo/tiny-gpt2")
    after = opt_lens.capture(alone, REPEATED, ablate=[(1, 3)], ablate_mlps=[0], ablate_with="mean")
    assert [r["loss"] for r in rows if r["run"] == "after"] == pytest.approx(opt_lens.token_losses(after).tolist(),
                                                                             abs=1e-5)
    assert at.dataframe[0].value["after"][0] == views.token_text(alone.tokenizer, int(after.next_logits.argmax()))
    assert views.parse_mlps(["MLP 1", "MLP 0", "MLP 2", "mlp 1", "MLP 01", None, "MLP 1"], n_layers=2) == [0, 1]


def test_the_url_restores_the_knocked_out_heads_and_the_patching_prompts():
    query = dict(knock_out=["L0.H1", "L1.H1"], ablate_with="mean", clean="one red cat rice seven green hat, one red cat",
                 corrupted="one red cat owl seven green hat, one red cat", answer=" rice", wrong=" owl")
    at = open_page(app(**query), PAGE)
    assert_clean(at)
    assert at.multiselect[0].value == ["L0.H1", "L1.H1"] and at.radio[0].value == "mean"
    inputs = {box.key: box.value for box in at.text_input if box.key}
    assert {key: inputs[key] for key in ("clean", "corrupted", "answer", "wrong")} == {
        key: query[key] for key in ("clean", "corrupted", "answer", "wrong")}
    alone = opt_lens.load("demo/tiny-gpt2")  # the guesses after the knock-out are the mean-ablated run's
    mean_run = opt_lens.capture(alone, at.session_state.prompt, ablate=[(0, 1), (1, 1)], ablate_with="mean")
    top = views.token_text(alone.tokenizer, int(mean_run.next_logits.argmax()))
    assert at.dataframe[0].value["after"][0] == top


@pytest.mark.parametrize("query, shown", [
    ({"knock_out": ["L0.H1", "L1.H2"]}, "L1.H2"),  # a hand-written link names the heads only: see one removed
    ({"knock_out": ["L1.H2"], "look_at": "L0.H3"}, "L0.H3"),  # a link that names the head to look at keeps it
    ({}, "L0.H0"),
])
def test_the_attention_view_opens_on_a_knocked_out_head_unless_the_link_names_another(query, shown):
    at = open_page(app(prompt=REPEATED, **query), PAGE)
    assert_clean(at)
    assert next(b for b in at.selectbox if b.label == "Head to look at").value == shown
    assert any(chart_title(c) == f"{shown} after" for c in charts(at))


def test_prompts_of_different_lengths_get_a_plain_message_not_an_exception():
    at = open_page(app(clean="When Mary and John went to the store, John gave a drink to",
                       corrupted="When Mary and John went to the store, Mary gave a drink to",
                       answer=" to", wrong=" the"), PAGE)
    assert_clean(at)
    told = [w.value for w in at.warning if "same number of tokens" in w.value]
    assert len(told) == 1 and "26 tokens" in told[0] and "24" in told[0], [w.value for w in at.warning]
    assert not any("patching the residual stream" in str(chart_title(c)) for c in charts(at))


def test_a_length_mismatch_between_long_prompts_names_where_they_part_not_every_token(gpt2):
    lead = "the cat sat on the mat and the dog ran to the park, " * 6
    clean, corrupted = lead + "John gave a drink to", lead + "Mary gave a drink to"
    at = open_page(app(clean=clean, corrupted=corrupted, answer=" to", wrong=" the"), PAGE)
    assert_clean(at)
    (told,) = [w.value for w in at.warning if "same number of tokens" in w.value]
    clean_tokens, corrupted_tokens = (opt_lens.capture(gpt2, text).tokens for text in (clean, corrupted))
    assert len(clean_tokens) != len(corrupted_tokens) and len(clean_tokens) > 60
    first = next(i for i, (a, b) in enumerate(zip(clean_tokens, corrupted_tokens)) if a != b)
    assert f"part at token {first}" in told and len(told) < 700  # was every token of both prompts


def test_the_two_model_view_runs_on_both_demo_models_with_one_scale():
    at = open_page(app(two_models="true"), PAGE)
    assert_clean(at)
    titles = [str(chart_title(c)) for c in charts(at)]
    for name in ("demo/tiny-gpt2", "demo/tiny-opt"):
        assert f"{name}: patching the residual stream" in titles
    assert titles.count("Knocking out one head") == 2


def test_the_attention_page_offers_to_knock_out_the_open_head():
    at = open_page(app(layer="0", head="1"), "pages/attention.py")
    assert_clean(at)
    assert [b.label for b in at.button if b.label.startswith("Knock this head out")] == ["Knock this head out (L0.H1)"]


def experiment_query(title: str) -> dict:
    """What the start page's button for ``title`` puts in the session and the URL it opens its page with."""

    def prepare(title):
        import json

        import streamlit as st

        from app import experiments

        experiment = next(e for e in experiments.EXPERIMENTS if e.title == title)
        settings = experiments.prepare_experiment(experiment)
        st.code(json.dumps({"prompt": st.session_state.prompt, **experiments.opening_query(settings)}))

    at = AppTest.from_function(prepare, args=(title,), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return json.loads(at.code[0].value)


@pytest.mark.parametrize("title, metric", [("Knock out the copying head", "induction"),
                                            ("Break the circuit upstream", "previous_token")])
def test_the_guided_experiments_open_the_page_with_the_best_scoring_heads(title, metric, gpt2):
    at = open_page(app(**experiment_query(title)), PAGE)  # the page the button opens, as it opens it
    assert_clean(at)
    assert at.session_state.prompt == experiments.REPEATED_TEXT
    scores = opt_lens.heads.head_scores(gpt2, opt_lens.capture(gpt2, experiments.REPEATED_TEXT))
    best = getattr(scores, metric)
    knocked = views.parse_heads(at.multiselect[0].value, 2, 4)
    assert len(knocked) == 1 and best[knocked[0]] == best.max()  # ties (L1.H1, L1.H2: 0.88) go either way
    viewed = views.parse_heads([next(b for b in at.selectbox if b.label == "Head to look at").value], 2, 4)[0]
    assert scores.induction[viewed] == scores.induction.max()


def stripe(cap, layer: int, head: int) -> float:
    """Mean attention, from each token of the prompt's second half that occurred before, to the token that
    followed its latest earlier occurrence: an induction head's stripe."""
    ids, pattern, weights = cap.input_ids.tolist(), cap.pattern(layer, head), []
    for query in range(len(ids) // 2, len(ids)):
        earlier = [key for key in range(query - 1) if ids[key] == ids[query]]
        if earlier:
            weights.append(float(pattern[query, earlier[-1] + 1]))
    return sum(weights) / len(weights)


# Measured once on experiments.REPEATED_TEXT (second-half loss in nats; the stripe of the copying head that the
# experiment opens): what the start page quotes for tiny-gpt2, and the same experiment on tiny-opt, whose
# best-scoring heads it opens there (copying L1.H2, previous-token L0.H2).
GUIDED_FIGURES = {
    "demo/tiny-gpt2": dict(first=7.79, second=3.48, copying=(1, 2), without_copying=4.08, without_layer_1=8.43,
                           previous=(0, 1), without_previous=7.51, stripe=(0.61, 0.08)),
    "demo/tiny-opt": dict(first=8.18, second=2.68, copying=(1, 2), without_copying=3.82, without_layer_1=8.68,
                          previous=(0, 2), without_previous=7.60, stripe=(0.63, 0.01)),
}


@pytest.mark.parametrize("name", list(GUIDED_FIGURES))
def test_the_figures_the_guided_experiments_quote_hold_on_the_demo_models(name):
    lm, figures, text = opt_lens.load(name), GUIDED_FIGURES[name], experiments.REPEATED_TEXT
    scores = opt_lens.heads.head_scores(lm, opt_lens.capture(lm, text))
    assert scores.induction[figures["copying"]] == scores.induction.max()  # the heads the buttons pick
    assert scores.previous_token[figures["previous"]] == scores.previous_token.max()

    def halves(**ablation):
        loss = opt_lens.token_losses(opt_lens.capture(lm, text, **ablation))
        return views.half_means(loss)  # what the page's two loss metrics show

    first, second = halves()
    assert first == pytest.approx(figures["first"], abs=0.1) and second == pytest.approx(figures["second"], abs=0.1)
    # "rises only a little": the other copying heads of layer 1 still copy
    assert halves(ablate=[figures["copying"]])[1] == pytest.approx(figures["without_copying"], abs=0.1)
    all_of_layer_1 = [(1, h) for h in range(lm.arch.n_heads)]
    assert halves(ablate=all_of_layer_1)[1] == pytest.approx(figures["without_layer_1"], abs=0.1)  # copying gone
    assert halves(ablate=[figures["previous"]])[1] == pytest.approx(figures["without_previous"], abs=0.1)
    before = stripe(opt_lens.capture(lm, text), *figures["copying"])
    after = stripe(opt_lens.capture(lm, text, ablate=[figures["previous"]]), *figures["copying"])
    assert (before, after) == pytest.approx(figures["stripe"], abs=0.03)


def test_changing_a_view_setting_reruns_no_model_computation(monkeypatch):
    at = open_page(app(knock_out=["L0.H1"]), PAGE)
    calls = []
    for function in ("capture", "head_effects", "attribute", "patch_resid", "patch_heads", "token_losses"):
        original = getattr(opt_lens, function)
        monkeypatch.setattr(opt_lens, function, lambda *a, _f=original, _n=function, **k: calls.append(_n) or _f(*a, **k))
    look = next(box for box in at.selectbox if box.label == "Head to look at")
    look.set_value("L1.H3").run()
    assert_clean(at)
    assert any(chart_title(c) == "L1.H3 after" for c in charts(at))
    next(t for t in at.text_input if t.key == "target").set_value(" the").run()  # a new token: one new sweep
    assert_clean(at)
    assert calls == ["head_effects", "attribute"]


def test_a_large_run_waits_for_its_button(monkeypatch):
    from app import causal_runs

    monkeypatch.setattr(causal_runs, "AUTO_RUN_TOKENS", 1)
    at = open_page(app(prompt="Bob sat on the big red mat and"), PAGE)  # a prompt no other test swept
    assert_clean(at)
    assert not any("knocking out one head" in str(chart_title(c)) for c in charts(at))
    run = next(b for b in at.button if b.label.startswith("Run knocking out each head"))
    run.click().run()
    assert_clean(at)
    assert any("knocking out one head" in str(chart_title(c)) for c in charts(at))


def test_the_attribution_adds_up_to_the_logit_the_model_computes(gpt2):
    prompt = "The cat sat on the"
    at = open_page(app(prompt=prompt, target=" mat"), PAGE)
    assert_clean(at)
    ids = gpt2.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logit = float(gpt2.model(input_ids=ids).logits[0, -1, gpt2.tokenizer.convert_tokens_to_ids("Ġmat")])
    line = next(m.value for m in at.markdown if "the model's own logit" in m.value)
    total, model_logit = (float(part.split("**")[1]) for part in line.split("= ")[-1].split("is "))
    assert total == pytest.approx(logit, abs=2e-3) and model_logit == pytest.approx(logit, abs=2e-3)
    rows = chart_rows(chart(at, "Heads writing"))
    expected = opt_lens.attribute(gpt2, opt_lens.capture(gpt2, prompt), gpt2.tokenizer.convert_tokens_to_ids("Ġmat"))
    assert [r["logit"] for r in rows] == pytest.approx(expected.heads.flatten().tolist(), abs=1e-5)


def test_a_model_without_direct_attribution_gets_the_librarys_reason_as_an_info(monkeypatch):
    def refuse(*args, **kwargs):
        raise opt_lens.OptLensError("This model normalises after each block (post-LN), so its logit is no sum of parts.")

    monkeypatch.setattr(opt_lens, "attribute", refuse)
    at = open_page(app(prompt="A dog ran to the old farm and", two_models="true",  # prompts no other test attributes
                       clean="one red cat tea seven green hat, one red cat", answer=" tea",
                       corrupted="one red cat pie seven green hat, one red cat", wrong=" pie"), PAGE)
    assert_clean(at)
    reasons = [i.value for i in at.info if "post\\-LN" in i.value]
    assert len(reasons) == 3  # section 3, and each model of section 5


def test_markup_typed_into_the_experiment_is_shown_as_text():
    at = open_page(app(clean="<img src=x onerror=alert(1)>", corrupted="<b>x</b>", answer="<script>", wrong="[a](b)",
                       target="<i>"), PAGE)
    assert_clean(at)
    shown = " ".join(w.value for w in at.warning)
    assert "\\<i\\>" in shown and "\\<script\\>" in shown
    assert "<script>" not in shown and "<i>" not in shown


def test_the_two_model_maps_are_fractions_of_each_models_clean_effect():
    at = open_page(app(two_models="true"), PAGE)
    preset = views.PATCHING_PRESETS["Copying (works on the demo models)"]
    opt = opt_lens.load("demo/tiny-opt")
    answer, wrong = (opt.tokenizer.convert_tokens_to_ids(t) for t in ("Ġcake", "Ġmilk"))
    clean, corrupted = (opt_lens.capture(opt, text).next_logits for text in (preset.clean, preset.corrupted))
    effect = float(clean[answer] - clean[wrong] - corrupted[answer] + corrupted[wrong])
    knocked = (opt_lens.head_effects(opt, preset.clean, token_id=answer)
               - opt_lens.head_effects(opt, preset.clean, token_id=wrong)) / effect
    shown = [c for c in charts(at) if chart_title(c) == "Knocking out one head"][1]  # model B's
    assert [r["fraction"] for r in chart_rows(shown)] == pytest.approx(knocked.flatten().tolist(), abs=1e-4)
    scale = json.loads(shown.proto.spec)["encoding"]["color"]["scale"]
    assert scale["domain"] == [-1.0, 1.0] and scale["domainMid"] == 0


@pytest.mark.parametrize("model_a_mlps, model_b_parts", [([], ["L0.H2", "L1.H2"]), (["MLP 0"], ["L0.H2", "MLP 1"]),
                                                          ([], [])])
def test_each_models_knock_out_is_a_fraction_of_its_own_clean_effect(model_a_mlps, model_b_parts):
    at = open_page(app(two_models="true", knock_out=["L1.H1"], knock_out_mlps=model_a_mlps,
                       knock_out_b=model_b_parts), PAGE)
    assert_clean(at)
    assert next(m for m in at.multiselect if m.key == "knock_out_b").value == model_b_parts
    preset = views.PATCHING_PRESETS["Copying (works on the demo models)"]
    expected = []
    for name, heads, mlps in (("demo/tiny-gpt2", [(1, 1)], [int(m[-1]) for m in model_a_mlps]),
                              ("demo/tiny-opt", [(int(p[1]), int(p[-1])) for p in model_b_parts if p[0] == "L"],
                               [int(p[-1]) for p in model_b_parts if p.startswith("MLP")])):
        if not heads and not mlps:
            continue
        alone = opt_lens.load(name)
        answer, wrong = (alone.tokenizer.convert_tokens_to_ids(t) for t in ("Ġcake", "Ġmilk"))
        clean, corrupted, knocked = (opt_lens.capture(alone, text, **ablation).next_logits for text, ablation in (
            (preset.clean, {}), (preset.corrupted, {}), (preset.clean, dict(ablate=heads, ablate_mlps=mlps))))
        clean_diff = float(clean[answer] - clean[wrong])
        effect = clean_diff - float(corrupted[answer] - corrupted[wrong])
        expected.append(f"{(float(knocked[answer] - knocked[wrong]) - clean_diff) / effect:+.2f}")
    shown = [m.value for m in at.metric if m.label.startswith("Knocking out ")]
    assert shown == expected and len(expected) == 1 + bool(model_b_parts)


def test_model_b_equal_to_the_sidebar_model_is_said_in_the_two_model_view():
    at = open_page(app(two_models="true", model_b="demo/tiny-gpt2"), PAGE)
    assert_clean(at)
    assert [i.value for i in at.info if "same one" in i.value]
    assert not [i.value for i in open_page(app(two_models="true"), PAGE).info if "same one" in i.value]


def test_a_sweep_reports_its_progress_and_the_bar_is_gone_when_it_is_done(monkeypatch):
    reported = []
    real = opt_lens.head_effects

    def sweep(lm, source, *, token_id=None, position=-1, progress=None):
        result = real(lm, source, token_id=token_id, position=position, progress=progress)
        progress(8, 8)  # the library's own calls went to the same bar
        reported.append(source.text)  # the page's cached capture of the prompt, not the prompt run again
        return result

    monkeypatch.setattr(opt_lens, "head_effects", sweep)
    at = open_page(app(prompt="Kate found a small green box and"), PAGE)  # a prompt no other test swept
    assert_clean(at)
    assert reported == ["Kate found a small green box and"]
    assert not at.get("progress")


def test_what_the_parts_write_toward_answer_minus_wrong_is_a_fraction_of_the_clean_effect():
    answer = types.SimpleNamespace(embed=1.0, heads=torch.tensor([[1.0, 2.0]]), mlps=torch.tensor([3.0]), rest=0.5)
    wrong = types.SimpleNamespace(embed=0.5, heads=torch.tensor([[2.0, 0.0]]), mlps=torch.tensor([1.0]), rest=0.5)
    heads, parts = views.attribution_difference(answer, wrong, clean_effect=4.0)
    assert heads["fraction"].tolist() == [-0.25, 0.5]
    assert dict(zip(parts["part"], parts["fraction"])) == {"embeddings": 0.125, "MLP 0": 0.5, "biases (rest)": 0.0}


@pytest.mark.parametrize("query", [
    {"prompt": "a"},  # one token for GPT-2: nothing to predict within the prompt
    {"prompt": "a", "model": "demo/tiny-opt"},  # </s> a: two tokens
    {"prompt": "The cat sat on the mat. " * 200},  # cut to the context
    {"knock_out": ["L7.H9", "x"], "ablate_with": "median", "two_models": "maybe"},  # a hand-edited link
    {"clean": "a", "corrupted": "b", "answer": " cake", "wrong": " cake"},
])
def test_edge_cases_draw_without_errors(query):
    at = open_page(app(**query), PAGE)
    assert_clean(at)


def test_choosing_the_same_example_again_after_editing_it_loads_it_again():
    preset = views.PATCHING_PRESETS["Copying (works on the demo models)"]
    at = open_page(app(), PAGE)
    box = next(b for b in at.selectbox if b.label == "Load an example")
    box.select("Copying (works on the demo models)").run()
    clean = next(t for t in at.text_input if t.key == "clean")
    clean.input("one red dog cake seven green hat, one red cat").run()
    assert next(t for t in at.text_input if t.key == "clean").value != preset.clean
    next(b for b in at.selectbox if b.label == "Load an example").select("Copying (works on the demo models)").run()
    assert_clean(at)
    assert next(t for t in at.text_input if t.key == "clean").value == preset.clean


def test_every_bar_of_the_parts_chart_keeps_its_name_in_presentation_mode():
    at = open_page(app(present="true", two_models="true"), PAGE)
    assert_clean(at)
    bars = [c for c in charts(at) if chart_title(c) in ("Embeddings, MLPs, biases", "What the rest writes (answer − wrong)")]
    assert len(bars) == 3  # section 3, and section 5's two columns
    for chart in bars:
        spec = json.loads(chart.proto.spec)
        assert spec["encoding"]["y"]["axis"]["labelOverlap"] is False
        assert [row["part"] for row in chart_rows(chart)] == ["embeddings", "MLP 0", "MLP 1", "biases (rest)"]
