"""The classroom features: teacher's note and presentation mode, the lesson, the glossary, views that fit
the model in use, cached models as defaults. AppTest, offline."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from app import caches, experiments, navigation, teacher
from app import charts as app_charts
from test_app import ROOT, app, assert_clean, chart_title, charts, open_page
from test_lesson_walk import entry

PAGES = ["pages/home.py", "pages/architecture.py", "pages/tokens.py", "pages/attention.py",
         "pages/predictions.py", "pages/compare.py"]


def note_shown(at: AppTest) -> list[str]:
    return [element.value for element in at.text]


def test_a_note_holding_html_and_markdown_is_shown_as_typed_on_every_page():
    note = '<img src=x onerror=alert(1)> **look at** [head 2](javascript:alert(1)) <script>x</script>'
    at = app(note=note)
    for page in PAGES:
        open_page(at, page)
        assert_clean(at)
        assert note_shown(at) == [note], page  # one plain-text element, character for character
        assert not any("onerror" in m.value for m in at.markdown), page  # never through Markdown or HTML
        assert at.query_params["note"] == note


def test_a_note_is_cut_at_280_characters_and_control_characters_become_spaces():
    at = open_page(app(note="a\x00b\u202ec" + "x" * 400), "pages/home.py")
    assert_clean(at)
    (shown,) = note_shown(at)
    assert shown == ("a b c" + "x" * 400)[:280] and len(shown) == teacher.NOTE_LIMIT


def test_no_note_no_box():
    at = open_page(app(), "pages/home.py")
    assert note_shown(at) == [] and "note" not in at.query_params


def test_a_presentation_link_opens_presentation_mode_and_keeps_the_explanations():
    plain = open_page(app(), "pages/attention.py")
    at = open_page(app(present="true"), "pages/attention.py")
    assert_clean(at)
    assert at.toggle(key="present").value is True
    styles = [h.proto.body for h in at.get("html")]
    assert any("font-size" in body for body in styles)  # larger type
    assert not any("font-size" in h.proto.body for h in plain.get("html"))
    assert [m.value for m in at.markdown if "Notice" in m.value] == [m.value for m in plain.markdown if "Notice" in m.value]
    at.toggle(key="present").set_value(False).run()
    assert not any("font-size" in h.proto.body for h in at.get("html"))


VEGA_LITE_LABEL_SIZE = 10  # Vega-Lite's default axis label size, in pixels


@pytest.mark.parametrize("page", ["pages/attention.py", "pages/predictions.py", "pages/cause_and_effect.py"])
def test_presentation_mode_enlarges_every_charts_labels_for_this_student_only(page):
    at = open_page(app(present="true"), page)
    other_student = open_page(app(), page)  # the same server process, another session
    configs = [json.loads(c.proto.spec).get("config", {}) for c in charts(at)]
    assert configs and all(c["axis"]["labelFontSize"] > VEGA_LITE_LABEL_SIZE for c in configs)
    assert charts(other_student) and not any("axis" in json.loads(c.proto.spec).get("config", {})
                                              for c in charts(other_student))


def test_the_glossary_is_on_every_page():
    at = app()
    for page in PAGES:
        open_page(at, page)
        shown = " ".join(m.value for m in at.sidebar.markdown)
        for term in ("token", "logit", "probability", "KL divergence", "Jensen-Shannon", "residual stream",
                     "attention head", "layer norm"):
            assert f"**{term}**" in shown, (page, term)


def test_a_lesson_walked_from_step_1_to_the_end():
    at = open_page(app(), "pages/home.py")
    at.button(key="lesson-start").click().run()
    seen = []
    for step, experiment in enumerate(experiments.EXPERIMENTS, start=1):
        experiment = experiment.for_model("demo/tiny-gpt2")
        assert at.session_state.lesson == step and at.query_params["lesson"] == str(step)
        at = open_page(at, experiment.page)  # where the step's button switched to
        assert_clean(at)
        banner = " ".join(m.value for m in at.markdown)
        assert f"step {step} of {len(experiments.EXPERIMENTS)}: {experiment.title}" in banner
        assert experiment.question in banner and experiment.notice in banner
        assert at.session_state.prompt == experiment.prompt
        seen.append(experiment.title)
        if step < len(experiments.EXPERIMENTS):
            at.button(key="lesson-next").click().run()
    assert seen == [e.title for e in experiments.EXPERIMENTS]
    at.button(key="lesson-finish").click().run()
    assert_clean(at)
    assert at.session_state.lesson is None and "lesson" not in at.query_params
    assert any("last step" in s.value for s in at.success)


def test_a_lesson_link_opens_its_step_and_a_bad_step_is_ignored():
    at = entry("pages/predictions.py", lesson="3")
    assert_clean(at)
    assert at.session_state.lesson == 3 and at.button(key="lesson-back") and at.button(key="lesson-next")
    at = entry("pages/home.py", lesson="99")
    assert_clean(at)
    assert at.session_state.lesson is None and "lesson" not in at.query_params


@pytest.mark.parametrize("name", ["demo/tiny-gpt2", "demo/tiny-opt"])
def test_the_tokens_step_says_what_the_demo_vocabulary_really_does(name):
    import opt_lens

    step = next(e for e in experiments.EXPERIMENTS if e.page == "pages/tokens.py").for_model(name)
    assert "common words take one" not in step.notice and "2,048" in step.notice
    pieces = opt_lens.capture(opt_lens.load(name), step.prompt).tokens
    for word in ("the", "cat", "sat", "mat"):  # the notice says these take one token each, space included
        assert f"␣{word}" in pieces, (word, pieces)
    assert "␣Tokenizers" not in pieces and "Tokenizers" not in pieces  # and that other words fall apart
    general = next(e for e in experiments.EXPERIMENTS if e.page == "pages/tokens.py").for_model("gpt2")
    assert "common words take one" in general.notice  # true for GPT-2's 50,257 pieces


def test_a_head_step_shows_the_heads_score(monkeypatch):
    at = entry("pages/attention.py", lesson="1")
    assert_clean(at)
    # The demo's previous-token head on this step's prompt, computed independently of the app.
    import opt_lens
    from opt_lens import heads

    lm = opt_lens.load("demo/tiny-gpt2")
    scores = heads.previous_token_scores(opt_lens.capture(lm, experiments.EXPERIMENTS[0].prompt).attention)
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    assert (layer, head) == (0, 1)  # the head its card names
    finding = [c.value for c in at.caption if "highest previous token score" in c.value]
    assert finding and f"layer {layer}, head {head}: {scores.max():.2f}" in finding[0]
    assert "Almost as high" not in finding[0]  # L0.H0 scores 0.68 here, well below 0.82
    assert not [w for w in at.warning if "scores above" in w.value]


def test_a_weak_best_head_is_called_weak_not_presented_as_the_mechanism(monkeypatch):
    import pandas as pd

    from app import tables

    weak = pd.DataFrame([{"metric": m, "layer": layer, "head": head, "score": 0.05 * (1 + head)}
                         for m in ("previous token", "induction") for layer in range(2) for head in range(4)])
    monkeypatch.setattr(tables, "head_score_table", lambda name, prompt: weak)
    at = entry("pages/home.py", lesson="2")  # opens the step's page, Attention
    assert_clean(at)
    assert any("head 3: 0.20" in c.value for c in at.caption)
    (warning,) = [w.value for w in at.warning if "scores above" in w.value]
    assert "0.3" in warning and "not a real induction head" in warning


# ------------------------------------------------------------------------------------------ logit lens

LENS_PROMPT = "The hedgehog and the squirrel sat on the blanket by the umbrella."


def chart_data(chart):
    import pyarrow as pa

    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pandas()


def lens_chart(at: AppTest):
    return next(c for c in at.get("vega_lite_chart") if "probability of final guess" in c.proto.spec)


def test_the_lens_colours_each_cell_by_the_final_answer_and_greys_the_embeddings():
    import json

    import torch

    import opt_lens

    at = open_page(app(prompt=LENS_PROMPT), "pages/predictions.py")
    assert_clean(at)
    chart = lens_chart(at)
    spec, data = json.loads(chart.proto.spec), chart_data(chart)
    color = spec["layer"][0]["encoding"]["color"]
    assert color["condition"]["value"] == "#e6e6e6" and color["field"] == "probability of final guess"
    lm = opt_lens.load("demo/tiny-gpt2")
    cap = opt_lens.capture(lm, LENS_PROMPT)
    for position in (1, cap.seq_len - 1):  # by hand: softmax of each layer's read-out, at the final answer
        probs = torch.softmax(opt_lens.logit_lens(lm, cap, position), dim=-1)  # [layer + 1, vocab]
        column = data[data.position == f"{position} {cap.tokens[position]}"].sort_values("layer")
        assert column["probability of final guess"].tolist() == pytest.approx(
            probs[:, probs[-1].argmax()].tolist(), abs=1e-5)
    # Row 0, greyed, echoes the input token, as the caption says.
    row0 = data[data.layer == 0].sort_values("position", key=lambda p: p.str.split(" ").str[0].astype(int))
    assert row0.embeddings.all() and not data[data.layer > 0].embeddings.any()
    assert row0.guess.tolist() == cap.tokens
    assert any("Row 0, in grey" in c.value and "echoes the input token" in c.value for c in at.caption)


def test_long_tokens_are_cut_in_cells_and_whole_in_the_tooltip():
    import json

    at = open_page(app(prompt=LENS_PROMPT), "pages/predictions.py")
    chart = lens_chart(at)
    data = chart_data(chart)
    hedgehog = data[(data.layer == 0) & (data.guess == "␣hedgehog")]
    assert hedgehog.cell.tolist() == ["␣hedge…"]
    assert all(len(cell) <= 7 for cell in data.cell)
    assert data[data.guess.str.len() <= 7].apply(lambda row: row.cell == row.guess, axis=1).all()
    tooltip = json.loads(chart.proto.spec)["layer"][0]["encoding"]["tooltip"]
    assert any(t["field"] == "guess" for t in tooltip) and not any(t["field"] == "cell" for t in tooltip)


def test_the_inspected_position_and_k_come_from_the_url_and_mark_the_lens():
    at = open_page(app(prompt=LENS_PROMPT, position="4 ␣squirrel", k="5"), "pages/predictions.py")
    assert_clean(at)
    assert at.select_slider(key="position").value == 4 and at.slider(key="k").value == 5
    bars = chart_data(at.get("vega_lite_chart")[0])
    assert len(bars) == 5
    assert any("really came next: “␣sat”" in c.value for c in at.caption)
    assert '"4 \\u2423squirrel"' in lens_chart(at).proto.spec or '"4 ␣squirrel"' in lens_chart(at).proto.spec


def test_the_lens_window_follows_a_position_beyond_the_first_columns():
    long_prompt = " ".join(["The cat sat on the mat."] * 6)
    at = open_page(app(prompt=long_prompt), "pages/predictions.py")
    last = at.select_slider(key="position").options[-1]
    shown = set(chart_data(lens_chart(at)).position)
    assert last in shown and len(shown) == 16
    at.select_slider(key="position").set_value(3).run()
    shown = set(chart_data(lens_chart(at)).position)
    assert any(p.startswith("3 ") for p in shown) and len(shown) == 16


# ------------------------------------------------------------------------------------------ compare


def test_compare_says_when_a_and_b_are_the_same_model_and_offers_the_other_family():
    at = open_page(app(model="demo/tiny-opt", model_b="demo/tiny-opt"), "pages/compare.py")
    assert_clean(at)
    assert any("both demo/tiny\\-opt" in w.value for w in at.warning)
    assert not at.get("vega_lite_chart")  # nothing drawn that would look like a comparison
    at.button(key="other-family").click().run()
    assert_clean(at)
    assert at.session_state.model_b == "demo/tiny-gpt2" and len(at.get("vega_lite_chart")) >= 4


def test_compare_draws_a_and_b_in_their_own_colours_on_every_chart():
    import json

    at = open_page(app(), "pages/compare.py")
    assert_clean(at)
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    blue, orange = "#1f77b4", "#e8710a"
    assert len(specs) == 5
    assert blue in specs[0] and orange not in specs[0] and orange in specs[1] and blue not in specs[1]
    for spec in specs[2:]:  # the depth curve, both logit lenses and both tuned lenses: A blue, B orange
        assert blue in spec and orange in spec
    scale = json.loads(specs[2])["encoding"]["color"]["scale"]
    assert scale == {"domain": ["demo/tiny-gpt2", "demo/tiny-opt"], "range": [blue, orange]}


def test_compare_depth_is_in_percent_everywhere():
    import json

    at = open_page(app(), "pages/compare.py")
    depth = json.loads(at.get("vega_lite_chart")[2].proto.spec)["encoding"]
    assert depth["x"]["axis"]["format"] == "%" and "%" in depth["x"]["title"]
    assert {"field": "depth", "format": ".0%", "title": "depth", "type": "quantitative"} in depth["tooltip"]
    settled = next(d.value for d in at.dataframe if "top guess from depth" in d.value.columns)
    assert all(value.endswith("%") for value in settled["top guess from depth"])


def test_head_pairs_are_ranked_against_uniform_attention():
    import torch

    import opt_lens

    at = open_page(app(), "pages/compare.py")
    pairs = next(d.value for d in at.dataframe if "above baseline" in d.value.columns)
    # A's heads vs uniform attention, by hand: every token of demo/tiny-gpt2 has a partner in demo/tiny-opt.
    lm = opt_lens.load("demo/tiny-gpt2")  # kept: the capture rebuilds its patterns through the model
    cap = opt_lens.capture(lm, at.session_state.prompt)
    n = min(cap.seq_len, 128)
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    for _, row in pairs.iterrows():
        layer, head = (int(part[1:]) for part in row["head in demo/tiny-gpt2"].split("."))
        pattern = cap.attention[layer, head, :n, :n].double()
        by_hand = 1 - 0.5 * (pattern - uniform).abs().sum(-1).mean()
        assert row["A's head vs uniform"] == pytest.approx(float(by_hand), abs=1e-4)
        assert row["above baseline"] == pytest.approx(
            row["similarity"] - max(row["A's head vs uniform"], row["B's head vs uniform"]), abs=1e-6)
    assert pairs["above baseline"].is_monotonic_decreasing
    # The previous-token heads the demo cards name come first; the near-uniform pair no longer looks like a match.
    first = pairs.iloc[0]
    assert (first["head in demo/tiny-gpt2"], first["best match in demo/tiny-opt"]) == ("L0.H1", "L0.H2")


# ------------------------------------------------------------------------------------------ architecture


def test_architecture_opens_on_the_sidebar_models_and_adds_several_typed_ids():
    at = open_page(app(model="demo/tiny-opt", model_b="demo/tiny-gpt2"), "pages/architecture.py")
    assert_clean(at)
    assert at.multiselect(key="architecture_models").value == ["demo/tiny-opt", "demo/tiny-gpt2"]
    assert at.dataframe[0].value.columns.tolist() == ["demo/tiny-opt", "demo/tiny-gpt2"]
    for typed in ("facebook/opt-2.7b", "EleutherAI/pythia-70m"):  # their configs need the Hub: a warning each
        at.text_input(key="architecture_typed").set_value(typed).run()
        assert not at.exception
    assert at.multiselect(key="architecture_models").value == [
        "demo/tiny-opt", "demo/tiny-gpt2", "facebook/opt-2.7b", "EleutherAI/pythia-70m"]
    assert at.text_input(key="architecture_typed").value == ""  # cleared for the next one
    warned = " ".join(w.value for w in at.warning)
    assert "facebook/opt\\-2\\.7b" in warned and "EleutherAI/pythia\\-70m" in warned
    at.text_input(key="architecture_typed").set_value("<b>x</b>").run()
    assert any("is not a model ID" in w.value for w in at.warning)
    assert len(at.multiselect(key="architecture_models").value) == 4


# ------------------------------------------------------------------------------------------ cached models


@pytest.fixture
def classroom_cache(hub_answering, tiny_folder):
    """A Hugging Face cache holding tiny stand-ins for gpt2 and facebook/opt-125m (fetched with the real client
    from the stand-in Hub), plus an incomplete facebook/opt-350m (no tokenizer); then the Hub goes away."""
    from huggingface_hub import hf_hub_download

    for repo, kind, complete in (("gpt2", "gpt2", True), ("facebook/opt-125m", "opt", True),
                                 ("facebook/opt-350m", "opt", False)):
        hub_answering.add(repo, tiny_folder(kind))
        for file in sorted(tiny_folder(kind).iterdir()):
            if complete or not file.name.startswith("tokenizer"):
                hf_hub_download(repo, file.name)
    hub_answering.stop()
    clear = (caches.hub_online, caches.cached_hub_models, caches.cached_description, caches.model_cache,
             caches.capture_cache)
    for cached in clear:
        cached.clear()
    yield hub_answering.cache
    for cached in clear:
        cached.clear()


def test_without_the_hub_cached_gpt2_and_opt_are_the_defaults(classroom_cache):
    at = open_page(app(), "pages/predictions.py")
    assert_clean(at)
    assert at.sidebar.selectbox[0].value == "gpt2"
    assert at.sidebar.selectbox[0].options == [
        "demo/tiny-gpt2", "demo/tiny-opt", "gpt2 · cached here", "facebook/opt-125m · cached here"]
    (banner,) = [info.value for info in at.sidebar.info]
    assert "facebook/opt\\-125m, gpt2 from this computer's model cache" in banner and "demo models" in banner
    assert "runs on the two" not in banner
    assert caches.model_cache().keys() == ["gpt2"]  # the page ran on the cached model
    at = open_page(at, "pages/compare.py")
    assert_clean(at)
    assert next(box for box in at.selectbox if box.label == "Model B").value == "facebook/opt-125m"
    assert sorted(caches.model_cache().keys()) == ["facebook/opt-125m", "gpt2"]


@pytest.mark.parametrize("mark", [" · cached here", " (needs the Hugging Face Hub)"])
def test_a_link_copied_where_the_box_marked_the_model_opens_it_where_it_is_not_marked(mark, hub_answering,
                                                                                     tiny_folder):
    # The browser writes a box's label into the link: on a laptop with the model cached (or offline) that is
    # "facebook/opt-125m · cached here"; the class's server, online and without it, must still open it.
    hub_answering.add("gpt2", tiny_folder("gpt2"))  # what the app's reachability probe asks for
    hub_answering.add("facebook/opt-125m", tiny_folder("opt"))
    for cached in (caches.hub_online, caches.cached_hub_models, caches.model_cache):
        cached.clear()
    at = open_page(app(model="facebook/opt-125m" + mark), "pages/predictions.py")
    assert_clean(at)
    assert caches.model_cache().keys() == ["facebook/opt-125m"]
    assert at.sidebar.selectbox[0].format_func(at.sidebar.selectbox[0].value) == "facebook/opt-125m"


def test_with_nothing_cached_and_no_hub_the_demo_models_are_the_defaults(hub_unreachable):
    caches.hub_online.clear(), caches.cached_hub_models.clear()
    at = open_page(app(), "pages/compare.py")
    assert {box.label: box.value for box in at.selectbox} == {
        "Model": "demo/tiny-gpt2", "Model A": "demo/tiny-gpt2", "Model B": "demo/tiny-opt"}
    (banner,) = [info.value for info in at.sidebar.info]
    assert "runs on the two bundled demo models" in banner


def test_the_attention_views_a_teacher_points_at_open_from_the_url():
    long_prompt = " ".join(["The cat sat on the mat."] * 8)
    at = open_page(app(prompt=long_prompt, window="40", focus="4 ␣the", head_metric="induction"), "pages/attention.py")
    assert_clean(at)
    assert at.slider(key="window").value == 40
    assert at.select_slider(key="focus").value == "4 ␣the"
    assert at.radio(key="head_metric").value == "induction"
    titles = [chart_title(c) for c in at.get("vega_lite_chart")]
    assert any(title.startswith("Where “4 ␣the” looks") for title in titles), titles


# ------------------------------------------------------------------------------------------ in Chromium


@pytest.fixture(scope="module")
def open_in_chromium():
    """``open_in_chromium(path)``: a new 1440x900 tab of the app (``streamlit run``) on ``path``, drawn."""
    from browser_support import CHROMIUM, StreamlitServer, launch_chromium, wait_for_app

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with StreamlitServer() as server:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)

            def open_tab(path: str):
                tab = browser.new_page(viewport={"width": 1440, "height": 900})
                tab.goto(f"{server.url}{path}")
                wait_for_app(tab, timeout=90_000)
                # A deep link's first run hands over to the entry point and reruns: wait for the page itself.
                tab.wait_for_selector('[data-testid="stMain"] h1', timeout=90_000)
                wait_for_app(tab, timeout=90_000)
                return tab

            try:
                yield open_tab
            finally:
                browser.close()


def test_a_presentation_link_in_chromium_folds_the_sidebar_enlarges_the_type_and_shows_the_note_as_text(
        open_in_chromium):
    import urllib.parse

    note = '<img src=x onerror="document.title=1"> look at **row 0**'
    query = urllib.parse.urlencode({"note": note})
    sizes = {}
    for present in ("", "&present=true"):
        tab = open_in_chromium(f"/predictions?{query}{present}")
        sizes[present] = tab.evaluate(
            "() => parseFloat(getComputedStyle(document.querySelector('[data-testid=\"stMain\"] p')).fontSize)")
        assert note in tab.locator(".st-key-teacher-note").inner_text()  # character for character, as text
        assert tab.locator(".st-key-teacher-note img").count() == 0 and tab.title() != "1"
        box = tab.locator('[data-testid="stSidebar"]').bounding_box()
        sidebar_open = bool(box) and box["width"] > 50 and box["x"] + box["width"] > 50
        assert sidebar_open == (not present), box
        tab.close()
    assert sizes["&present=true"] >= 1.15 * sizes[""], sizes


def test_the_copying_step_names_every_head_that_scores_almost_as_high():
    import opt_lens
    from opt_lens import heads

    at = entry("pages/attention.py", lesson="2")
    assert_clean(at)
    # By hand: the induction score on the probe the app measures (random tokens repeated once, seed 0).
    lm = opt_lens.load("demo/tiny-gpt2")
    probe, start, period = heads.induction_probe(lm, length=40, seed=0)
    scores = heads.induction_scores(probe.attention, start, period)  # [layer, head]
    best = divmod(int(scores.argmax()), scores.shape[1])
    close = [(layer, head) for layer in range(scores.shape[0]) for head in range(scores.shape[1])
             if scores[layer, head] >= scores.max() - 0.05 and (layer, head) != best]
    assert len(close) == 2  # the card's L1.H1 and L1.H3 score within 0.01 of L1.H2 here
    (finding,) = [c.value for c in at.caption if "highest induction score" in c.value]
    assert f"layer {best[0]}, head {best[1]}: {scores.max():.2f}" in finding
    for layer, head in close:
        assert f"layer {layer}, head {head} ({scores[layer, head]:.2f})" in finding
    assert f"layer {best[0]}, head {best[1]} (" not in finding  # the best is not also "almost as high"
    assert (at.session_state.layer, at.session_state.head) == best


@pytest.mark.parametrize("name, step", [("demo/tiny-gpt2", 1), ("demo/tiny-opt", 1), ("demo/tiny-opt", 2)])
def test_the_lesson_opens_the_heads_the_demo_cards_name(name, step):
    from test_demo_shipped import card_figures

    at = entry("pages/attention.py", model=name, lesson=str(step))
    assert_clean(at)
    card = card_figures(name)
    expected = card["previous head"] if step == 1 else card["induction head"]
    assert (at.session_state.layer, at.session_state.head) == expected


def test_the_first_page_does_not_import_torch_when_nothing_is_cached():
    import subprocess
    import sys

    # A fresh process: the start page with an empty cache and no Hub must not wait for torch (seconds).
    code = ("import sys; from streamlit.testing.v1 import AppTest; "
            "at = AppTest.from_file('streamlit_app.py', default_timeout=120).run(); "
            "assert not at.exception; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr[-2000:]


def test_a_lesson_step_seen_from_another_page_leads_back_to_its_page():
    # A student's link copied on another page than the step's (it carries the prompt: the page stays).
    at = entry("pages/compare.py", lesson="3", prompt=experiments.EXPERIMENTS[2].prompt)
    assert_clean(at)
    back = at.button(key="lesson-here")
    assert "Predictions & logit lens" in back.label
    at = entry("pages/predictions.py", lesson="3")
    assert_clean(at)
    assert [b.key for b in at.button if b.key == "lesson-here"] == []
    for page in {experiment.page for experiment in experiments.EXPERIMENTS}:
        title = navigation.PAGE_TITLES[page]  # the title the lesson expects; the page must give itself the same
        assert f'frame.page_intro(\n    "{title}",' in (ROOT / page).read_text(), page


def test_a_click_on_a_lens_column_in_chromium_inspects_that_position_and_puts_it_in_the_link(open_in_chromium):
    from browser_support import wait_for_app

    tab = open_in_chromium("/predictions")
    slider = tab.locator('[data-testid="stSlider"]').nth(1)
    assert "25 ␣the" in slider.inner_text()  # the last position of the default prompt
    grid = tab.locator('[data-testid="stVegaLiteChart"]').nth(1).locator("canvas, svg.marks").first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    # The second column (position 11, window 10-25), in the top row: under the colour legend.
    tab.mouse.click(box["x"] + 110, box["y"] + 110)
    wait_for_app(tab, timeout=90_000)
    tab.wait_for_function("() => location.search.includes('position=')", timeout=30_000)
    assert "11 ␣Alice" in slider.inner_text()
    assert "position=11+%E2%90%A3Alice" in tab.url


def test_lens_words_stay_inside_their_cells_and_the_legend_leaves_the_grid_its_width():
    """At 1024 px the legend beside 16 columns squeezed each to ~19 px and the words ran into each other."""
    import json

    spec = json.loads(lens_chart(open_page(app(prompt=LENS_PROMPT), "pages/predictions.py")).proto.spec)
    cells, words = spec["layer"]
    assert words["mark"]["limit"] == {"expr": "bandwidth('x') - 4"}  # Vega cuts a word to its cell, with "…"
    assert cells["encoding"]["color"]["legend"]["orient"] == "top"


def test_the_lens_says_which_positions_it_shows_when_the_prompt_has_more():
    long_prompt = " ".join(["The cat sat on the mat."] * 6)
    at = open_page(app(prompt=long_prompt), "pages/predictions.py")
    last = len(at.select_slider(key="position").options) - 1
    assert any(f"here {last - 15}–{last} of 0–{last}" in c.value for c in at.caption)
    at = open_page(app(prompt=LENS_PROMPT), "pages/predictions.py")  # short: the whole prompt, nothing to say
    assert not any("positions at a time" in c.value for c in at.caption)


def test_compare_lens_words_stay_inside_their_cells_and_the_pair_count_is_the_real_one():
    """A 12-layer model's depth cells are narrow: their words ran into each other at 1024 px. The demo models
    have 8 heads each, so 8 pairs are listed, not "the twelve"."""
    import json

    at = open_page(app(), "pages/compare.py")
    words = json.loads(at.get("vega_lite_chart")[3].proto.spec)["layer"][1]
    assert words["mark"]["limit"] == {"expr": "scale('x', datum.to) - scale('x', datum.from) - 4"}
    pairs = next(d.value for d in at.dataframe if "above baseline" in d.value.columns)
    assert len(pairs) == 8 and any("Below: the 8 pairs furthest above" in c.value for c in at.caption)


def test_an_attention_map_keeps_its_width_when_two_stand_side_by_side():
    """Cause and effect draws two maps side by side: at 1024 px the legend beside each took half its width and
    26 key labels piled into one blot. The legend goes above the map, and labels that would overlap are dropped
    (the tooltip still names every key)."""
    import pandas as pd

    from app import charts

    order = [f"{i} t{i}" for i in range(26)]
    frame = pd.DataFrame({"query": order, "key": order, "weight": 1.0})
    spec = charts.attention_heatmap(frame, order, "L0.H0 before").spec()
    assert spec["encoding"]["color"]["legend"]["orient"] == "top"
    assert spec["encoding"]["x"]["axis"]["labelOverlap"] == "greedy"
    assert spec["encoding"]["y"]["axis"]["labelOverlap"] is False  # rows have room for every label


def test_a_clients_clear_cache_message_reloads_no_model_and_loses_no_result():
    """Streamlit's "Clear cache" (one websocket message any student can send) leaves the class's models,
    captures and results where they are: the page runs again without loading the model again."""
    from browser_support import StreamlitServer
    from streamlit_client import StreamlitClient

    with StreamlitServer() as server:
        student, other = StreamlitClient(server.url), StreamlitClient(server.url)
        student.open("attention", "model=demo/tiny-gpt2&prompt=one+two+three+one+two+three")
        loads = server.log().count("Loaded demo/tiny-gpt2")
        assert loads == 1
        other.clear_cache()
        warm = student.open("attention", "model=demo/tiny-gpt2&prompt=one+two+three+one+two+three")
        assert student.problems() == []
        assert server.log().count("Loaded demo/tiny-gpt2") == loads  # the model was not loaded again
        assert "Scoring every head…" not in student.texts  # nor were the head scores computed again
        student.close(), other.close()
    assert warm < 30


MODEL_FUNCTIONS = ("capture", "generate", "load", "attribute", "head_effects", "patch_heads", "patch_resid",
                   "token_losses", "logit_lens_map", "top_k_next")


@pytest.mark.parametrize("page", ["pages/attention.py", "pages/predictions.py", "pages/compare.py",
                                  "pages/cause_and_effect.py"])
def test_a_warm_page_view_runs_no_model_function_and_rebuilds_nothing_shared(monkeypatch, page):
    """A second student opening a page the first has opened (same model and prompt) is served from the shared
    caches: no call reaches the model, no table is built again."""
    query = {"model": "demo/tiny-gpt2", "model_b": "demo/tiny-opt", "prompt": "Mary and John went to the shop. Mary"}
    assert_clean(app(page, **query).run())  # the first student
    calls = []

    def counted(module, name):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: (calls.append(name), original(*a, **k))[1])

    import opt_lens.compare
    import opt_lens.heads

    for name in MODEL_FUNCTIONS:
        counted(opt_lens, name)
    for name in ("head_scores", "induction_probe"):
        counted(opt_lens.heads, name)
    for name in ("compare_next_tokens", "match_heads", "depth_curve", "align_tokens"):
        counted(opt_lens.compare, name)
    assert_clean(app(page, **query).run())  # the second
    assert calls == []


@pytest.mark.parametrize("page", ["pages/attention.py", "pages/predictions.py", "pages/compare.py", "pages/inside.py",
                                  "pages/flow.py", "pages/architecture.py", "pages/cause_and_effect.py",
                                  "pages/generate.py"])
def test_a_warm_page_view_builds_no_chart(monkeypatch, page):
    """Charts are built once per (model, prompt, view settings) and shared: a second student's view of the
    same page converts no Altair chart to Vega-Lite and writes no Vega-Lite spec, yet draws as many charts, with
    the same specs."""
    query = {"model": "demo/tiny-gpt2", "model_b": "demo/tiny-opt", "prompt": "Mary and John went to the shop. Mary"}
    first = app(page, **query).run()
    assert_clean(first)
    built = []
    converted, written = app_charts.spec_of, app_charts.vega_lite

    def convert(chart):
        if not isinstance(chart, app_charts.ChartSpec):  # a shared spec passes through on its way to the page
            built.append(chart)
        return converted(chart)

    monkeypatch.setattr(app_charts, "spec_of", convert)
    monkeypatch.setattr(app_charts, "vega_lite", lambda spec, **data: (built.append(spec), written(spec, **data))[1])
    second = app(page, **query).run()
    assert_clean(second)
    assert built == []
    assert [c.proto.spec for c in charts(second)] == [c.proto.spec for c in charts(first)] and charts(first)
