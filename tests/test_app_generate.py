"""The "Watch the model write" page, driven by AppTest offline on the demo models."""

import re

import pytest
from streamlit.testing.v1 import AppTest
from test_app import ROOT, TIMEOUT, app, assert_clean, chart_rows, chart_title, charts, open_page

import opt_lens

PAGE = "pages/generate.py"
PROMPT = "Olga counted 7 goats near the"
SAMPLING = {"temperature": "1.3", "top_k": "20", "max_new_tokens": "12", "seed": "42"}


@pytest.fixture(scope="module")
def separate_models():
    """Models loaded apart from the app's shared cache: the reference the page must agree with."""
    return {name: opt_lens.load(name) for name in opt_lens.DEMO_MODELS}


def generate_page(**query):
    return open_page(app(**query), PAGE)


def shown_token_ids(at) -> list[int]:
    """The ids of the chips the page shows, read from their tooltips."""
    chips = next(m.value for m in at.markdown if m.value.startswith('<div style="line-height'))
    return [int(token_id) for token_id in re.findall(r'title="step \d+ · id (\d+)', chips)]


def widget(widgets, label):
    return next(w for w in widgets if w.label == label)


@pytest.mark.parametrize("model", sorted(opt_lens.DEMO_MODELS))
def test_the_page_runs_clean_and_shows_what_generate_computes(separate_models, model):
    at = generate_page(model=model, prompt=PROMPT, **SAMPLING)
    assert_clean(at)
    expected = opt_lens.generate(separate_models[model], PROMPT, max_new_tokens=12, temperature=1.3, top_k=20, seed=42)
    assert shown_token_ids(at) == expected.token_ids.tolist()
    assert at.dataframe[0].value["id"].tolist() == expected.token_ids.tolist()
    assert at.dataframe[0].value["probability"].tolist() == pytest.approx([s.probability for s in expected.steps])


def test_greedy_by_default_equals_generate(separate_models):
    at = generate_page(prompt=PROMPT)
    assert_clean(at)
    expected = opt_lens.generate(separate_models["demo/tiny-gpt2"], PROMPT)
    assert shown_token_ids(at) == expected.token_ids.tolist()
    assert widget(at.select_slider, "Top-k").disabled and widget(at.number_input, "Seed").disabled


def settings_shown(at) -> dict:
    return {
        "temperature": widget(at.slider, "Temperature").value, "top_k": widget(at.select_slider, "Top-k").value,
        "max_new_tokens": widget(at.slider, "New tokens").value, "seed": widget(at.number_input, "Seed").value,
    }


def test_the_url_restores_the_settings():
    # The browser writes a bound widget's changes into the URL; AppTest has no browser, so only reading is tested.
    at = generate_page(prompt=PROMPT, **SAMPLING)
    assert_clean(at)
    assert settings_shown(at) == {"temperature": pytest.approx(1.3), "top_k": 20, "max_new_tokens": 12, "seed": 42}


@pytest.mark.parametrize(
    "query",
    [
        {"temperature": "nan", "top_k": "7", "max_new_tokens": "0", "seed": "-1"},
        {"temperature": "1e9", "top_k": "x", "max_new_tokens": "100000", "seed": str(2**40)},
        {"temperature": "", "top_k": "", "max_new_tokens": "", "seed": ""},
        {"temperature": "<b>", "top_k": "2.5", "max_new_tokens": "twenty", "seed": "0x10"},
    ],
)
def test_bad_settings_in_the_url_fall_back_to_defaults(query):
    at = generate_page(prompt=PROMPT, **query)
    assert_clean(at)
    assert settings_shown(at) == {"temperature": 0.0, "top_k": 0, "max_new_tokens": 20, "seed": 0}


def test_choosing_a_step_shows_the_distribution_it_was_drawn_from(separate_models):
    at = generate_page(prompt=PROMPT, **SAMPLING)
    expected = opt_lens.generate(separate_models["demo/tiny-gpt2"], PROMPT, max_new_tokens=12, temperature=1.3,
                                 top_k=20, seed=42)
    chooser = at.get("button_group")[-1]  # the new tokens as buttons (st.pills), one per step
    assert len(chooser.proto.options) == len(expected.steps)
    chooser.set_value(2).run()
    assert_clean(at)
    assert chart_title(charts(at)[0]).startswith("Step 3:")
    assert at.query_params["step"] == "3"  # a teacher's link opens the same token (counted from 1)
    step = expected.steps[2]
    rows = chart_rows(charts(at)[0])
    shown = [(row["token"], row["probability"]) for row in rows[: len(step.alternatives)]]
    assert shown == [(a.token, pytest.approx(a.probability)) for a in step.alternatives]
    assert [row["token"] for row in rows if row["chosen"]] == [step.token]


def test_append_puts_the_continuation_in_the_prompt(separate_models):
    at = generate_page(prompt=PROMPT, **SAMPLING)
    expected = opt_lens.generate(separate_models["demo/tiny-gpt2"], PROMPT, max_new_tokens=12, temperature=1.3,
                                 top_k=20, seed=42)
    widget(at.button, "Append to the prompt").click().run()
    assert_clean(at)
    assert at.session_state.prompt == PROMPT + expected.text
    assert at.sidebar.text_area[0].value == PROMPT + expected.text
    assert at.query_params["prompt"] == PROMPT + expected.text


def test_stopping_at_the_context_is_said():
    at = generate_page(prompt=" ball" * 120, max_new_tokens="30")  # the demo model reads 128 tokens
    assert_clean(at)
    assert any("context is full" in w.value for w in at.warning)
    full = generate_page(prompt=" ball" * 200)
    assert_clean(full)
    assert any("already fills" in i.value for i in full.info)


def test_markup_in_the_prompt_is_shown_as_text():
    at = generate_page(prompt="<img src=x onerror=alert(1)> the")
    assert_clean(at)
    chips = next(m.value for m in at.markdown if m.value.startswith('<div style="line-height'))
    assert "<img" not in chips and "&lt;img src=x onerror=alert(1)&gt;" in chips


def test_the_page_is_registered_in_the_entry_point():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page(PAGE).run()
    assert_clean(at)
    assert at.title[0].value == "Watch the model write"


def test_a_link_opens_its_step_and_a_step_the_run_lacks_falls_back_to_the_first():
    at = generate_page(prompt=PROMPT, **SAMPLING, step="5")
    assert_clean(at)
    assert chart_title(charts(at)[0]).startswith("Step 5:")
    at = generate_page(prompt=PROMPT, **SAMPLING, step="99")
    assert_clean(at)
    assert chart_title(charts(at)[0]).startswith("Step 1:")


def test_clicking_the_picked_token_again_keeps_it_picked():
    at = generate_page(prompt=PROMPT, **SAMPLING)
    at.get("button_group")[-1].set_value(2).run()
    at.get("button_group")[-1].set_value(None).run()  # what a second click on the same pill sends
    assert_clean(at)
    assert at.get("button_group")[-1].value == 2
    assert chart_title(charts(at)[0]).startswith("Step 3:") and at.query_params["step"] == "3"


REPEATING = " ball ball ball ball"  # the demo continues it with " ball" twelve times, some at the same shade


def test_each_chip_opens_its_own_step_when_the_same_token_repeats(separate_models):
    # Streamlit tells pills apart by their labels: chips of the same token at the same shade were one pill,
    # and a click on any of them opened the last (steps 4-6 opened step 8 here, 7 and 9-11 step 12).
    expected = opt_lens.generate(separate_models["demo/tiny-gpt2"], REPEATING, max_new_tokens=12)
    assert [step.token for step in expected.steps] == ["␣ball"] * 12
    at = generate_page(prompt=REPEATING, max_new_tokens="12")
    for index, step in enumerate(expected.steps):
        at.get("button_group")[-1].set_value(index).run()
        assert_clean(at)
        assert chart_title(charts(at)[0]).startswith(f"Step {index + 1}:")
        assert at.query_params["step"] == str(index + 1) and at.get("button_group")[-1].value == index
        chosen = [row["probability"] for row in chart_rows(charts(at)[0]) if row["chosen"]]
        assert chosen == [pytest.approx(step.probability)]
    linked = generate_page(prompt=REPEATING, max_new_tokens="12", step="6")
    assert chart_title(charts(linked)[0]).startswith("Step 6:") and linked.get("button_group")[-1].value == 5


def seed_note(at) -> list[str]:
    return [c.value for c in at.caption if "seed was ignored" in c.value]


@pytest.mark.parametrize("value", ["inf", "-inf", "1e309", "nan", "-1", str(2**40), "2.5", "", "x" * 10_000],
                         ids=["inf", "-inf", "1e309", "nan", "-1", "2**40", "2.5", "empty", "10k characters"])
def test_a_seed_that_is_no_whole_number_in_range_is_ignored_with_a_note(value):
    # inf, -inf and 1e309 showed "Something went wrong": Streamlit's own reading of the box failed on them.
    at = generate_page(prompt=PROMPT, temperature="1.0", seed=value)
    assert_clean(at)
    assert widget(at.number_input, "Seed").value == 0 and "seed" not in at.query_params
    assert len(seed_note(at)) == 1


def test_a_seed_in_range_is_used_without_a_note(separate_models):
    at = generate_page(prompt=PROMPT, temperature="1.0", seed="4294967295")
    assert_clean(at)
    assert widget(at.number_input, "Seed").value == 4294967295 and not seed_note(at)
    expected = opt_lens.generate(separate_models["demo/tiny-gpt2"], PROMPT, temperature=1.0, seed=4294967295)
    assert shown_token_ids(at) == expected.token_ids.tolist()
    widget(at.number_input, "Seed").set_value(7).run()  # the box writes its seed into the link, the default none
    assert at.query_params["seed"] == "7" and not seed_note(at)
    widget(at.number_input, "Seed").set_value(0).run()
    assert "seed" not in at.query_params
