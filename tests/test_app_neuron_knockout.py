"""Knocking an MLP neuron out: the button inside an MLP, the link it opens, and Cause and effect's numbers, on the
bundled demo models. Expected values come from the library called directly on separately loaded models."""

from __future__ import annotations

import pytest

import opt_lens
from app import causal_views as views
from app import keys, navigation
from test_app import app, assert_clean, chart_rows, chart_title, charts, open_page

PAGE = "pages/cause_and_effect.py"
REPEATED = "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp"


def shown_losses(at) -> dict[str, list[float]]:
    rows = chart_rows(next(c for c in charts(at) if "loss of each next token" in str(chart_title(c))))
    return {run: [r["loss"] for r in rows if r["run"] == run] for run in ("before", "after")}


def neuron_box(at):
    return next(box for box in at.text_input if box.key == keys.KNOCK_OUT_NEURONS)


def test_knock_this_neuron_out_opens_a_link_that_reproduces_the_knocked_out_run():
    at = open_page(app(prompt=REPEATED, mlp_layer="1", neuron="17"), "pages/inside.py")
    assert_clean(at)
    button = next(b for b in at.button if b.label.startswith("Knock this neuron out"))
    assert button.label == "Knock this neuron out (L1.N17)"
    button.click().run()
    asked = at.session_state[navigation.PAGE_TO_OPEN]  # AppTest cannot follow st.switch_page: read what it asked
    assert asked["script"] == PAGE and asked["query"] == {keys.KNOCK_OUT_NEURONS: "L1.N17"}

    fresh = open_page(app(prompt=REPEATED, **asked["query"]), PAGE)  # the link, opened by another student
    assert_clean(fresh)
    assert neuron_box(fresh).value == "L1.N17" and fresh.query_params[keys.KNOCK_OUT_NEURONS] == "L1.N17"
    alone = opt_lens.load("demo/tiny-gpt2")  # a separate model object, as a student alone would get
    before = opt_lens.token_losses(opt_lens.capture(alone, REPEATED))
    knocked = opt_lens.capture(alone, REPEATED, ablate_neurons=[(1, 17)])
    after = opt_lens.token_losses(knocked)
    shown = shown_losses(fresh)
    assert shown["before"] == pytest.approx(before.tolist(), abs=1e-5)
    assert shown["after"] == pytest.approx(after.tolist(), abs=1e-5)
    assert (after - before).abs().max() > 1e-3  # the neuron mattered: the test can tell the runs apart
    top = views.token_text(alone.tokenizer, int(knocked.next_logits.argmax()))
    assert fresh.dataframe[0].value["after"][0] == top


@pytest.mark.parametrize("model", list(opt_lens.DEMO_MODELS))
def test_neurons_from_the_url_change_the_run_by_the_librarys_numbers(model):
    at = open_page(app(model=model, prompt=REPEATED, knock_out_neurons="L0.N3, L1.N40 L1.N7", ablate_with="mean"),
                   PAGE)
    assert_clean(at)
    alone = opt_lens.load(model)
    before = opt_lens.capture(alone, REPEATED)
    after = opt_lens.capture(alone, REPEATED, ablate_neurons=[(0, 3), (1, 7), (1, 40)], ablate_with="mean")
    loss_before, loss_after = opt_lens.token_losses(before), opt_lens.token_losses(after)
    assert shown_losses(at)["after"] == pytest.approx(loss_after.tolist(), abs=1e-5)
    assert (loss_after - loss_before).abs().max() > 1e-4
    half = len(loss_before) // 2
    second = next(m for m in at.metric if m.label == "Mean loss, second half")
    assert second.value == f"{float(loss_after[half:].mean()):.2f} nats"
    assert not [c for c in at.caption if c.value.startswith("Ignored")]


def test_neurons_this_model_lacks_are_ignored_with_a_note():
    at = open_page(app(prompt=REPEATED, knock_out_neurons="L9.N1, L1.N99999, <b>x</b>, L1.N17"), PAGE)
    assert_clean(at)
    note = next(c.value for c in at.caption if c.value.startswith("Ignored"))
    assert "L9\\.N1" in note and "neurons 0-511" in note and "<b>" not in note  # escaped, shown as typed
    alone = opt_lens.load("demo/tiny-gpt2")
    after = opt_lens.token_losses(opt_lens.capture(alone, REPEATED, ablate_neurons=[(1, 17)]))
    assert shown_losses(at)["after"] == pytest.approx(after.tolist(), abs=1e-5)  # the valid one still runs


def test_neuron_labels_are_checked_against_the_model():
    text = "L1.N37, L0.N5;L1.N37 L2.N0 L01.N3 l1.n2 L1.N-1 L0.N511 L0.N512"
    neurons, note = views.parse_neurons(text, n_layers=2, d_mlp=512)
    assert neurons == ((0, 5), (0, 511), (1, 37)) and "L2\\.N0" in note
    assert views.parse_neurons("", 2, 512) == ((), None)
    many, note = views.parse_neurons(" ".join(f"L0.N{i}" for i in range(40)), 2, 512)
    assert len(many) == views.MAX_NEURONS and "at most" in note
