"""The Streamlit app, driven by AppTest offline on the bundled demo models."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

import opt_lens
from app import caches, experiments, navigation, state, text
from app.charts import TITLE_FIELD

PAGES = ["pages/home.py", "pages/architecture.py", "pages/tokens.py", "pages/attention.py",
         "pages/predictions.py", "pages/compare.py"]
TIMEOUT = 120
ROOT = Path(__file__).resolve().parents[1]


def page_in_frame(page: str) -> None:
    """The entry's frame (sidebar, friendly errors, URL) around one page, without st.navigation.

    AppTest 1.67 re-runs only the page script after the first run of a navigation app, skipping the
    entry; running the same frame from a function keeps every rerun complete.
    """
    import runpy
    import types
    from pathlib import Path

    from app import frame, navigation

    frame.configure_server()
    script = f"pages/{Path(page).name}"
    frame.run_frame(types.SimpleNamespace(url_path=navigation.url_path(script), run=lambda: runpy.run_path(page)))


def app(page: str = "pages/home.py", **query) -> AppTest:
    at = AppTest.from_function(page_in_frame, args=(str(ROOT / page),), default_timeout=TIMEOUT)
    at.query_params.update(query)
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.args = (str(ROOT / page),)
    return at.run()


def charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def chart_title(chart) -> str:
    """The title of an AppTest chart, or of a chart proto a websocket client read: in its spec, or in its data
    where the spec reads it from there (``charts.vega_lite``; the browser tests see Vega draw it)."""
    title = json.loads(getattr(chart, "proto", chart).spec).get("title", "")
    if isinstance(title, dict) and isinstance(title.get("text"), dict):
        assert title["text"]["expr"].endswith(f"[0].{TITLE_FIELD} : ''"), title
        return chart_rows(chart)[0][TITLE_FIELD]
    return title


def chart_rows(chart) -> list[dict]:
    """The rows a Vega-Lite chart draws (its dataset travels as Arrow IPC); an AppTest chart or a chart proto."""
    proto = getattr(chart, "proto", chart)
    name = json.loads(proto.spec)["data"]["name"]
    dataset = next(d for d in proto.datasets if d.name == name)
    return pa.ipc.open_stream(dataset.data.data).read_pandas().to_dict("records")


def chips(at: AppTest, index: int = 0) -> str:
    """The HTML of the index-th row of token chips on the Tokens page."""
    return [m.value for m in at.markdown if m.value.startswith('<div style="line-height')][index]


def selectbox(at: AppTest, label: str):
    return next(box for box in at.selectbox if box.label == label)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_offline_on_the_demo_models(page):
    at = open_page(app(), page)
    assert_clean(at)
    assert at.title[0].value
    assert at.session_state.model == "demo/tiny-gpt2"  # the Hub is unreachable: demo defaults


def test_the_start_page_offers_every_experiment_on_a_page_that_exists():
    at = app().run()
    assert_clean(at)
    assert [b.label for b in at.button if b.label == "Try it"] == ["Try it"] * len(experiments.EXPERIMENTS)
    attention = open_page(app(), "pages/attention.py")
    scores = next(radio for radio in attention.radio if radio.label == "Score").options
    for experiment in experiments.EXPERIMENTS:
        assert (ROOT / experiment.page).is_file() and experiment.title in " ".join(m.value for m in at.markdown)
        assert experiment.head_metric in (None, *scores)


def test_the_entry_point_registers_every_page():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    assert_clean(at)
    notes = [info.value for info in at.sidebar.info]
    assert len(notes) == 1 and "demo models" in notes[0]  # said once, plainly
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert_clean(at)


def test_pages_draw_their_charts_and_tables():
    at = app()
    expected = {"pages/architecture.py": (1, 1), "pages/attention.py": (3, 0), "pages/predictions.py": (2, 0),
                "pages/compare.py": (2, 3), "pages/tokens.py": (0, 2)}
    for page, (n_charts, n_tables) in expected.items():
        open_page(at, page)
        assert_clean(at)
        assert len(charts(at)) >= n_charts, page
        assert len(at.dataframe) >= n_tables, page


def test_url_opens_the_matching_view():
    at = open_page(app(model="demo/tiny-opt", layer="1", head="2", prompt="The dog ran to the"), "pages/attention.py")
    assert_clean(at)
    assert (at.session_state.layer, at.session_state.head) == (1, 2)
    assert selectbox(at, "Layer").value == 1 and selectbox(at, "Head").value == 2
    assert chart_title(charts(at)[0]) == "demo/tiny-opt · layer 1 · head 2"
    assert at.sidebar.text_area[0].value == "The dog ran to the"


@pytest.mark.parametrize(
    "query",
    [
        {"model": "../../etc/passwd", "layer": "-3", "head": "x"},
        {"model": "https://evil.example/model", "layer": "999999", "head": "1e9"},
        {"model": "", "prompt": "", "layer": "", "head": ""},
        {"layer": "7", "head": "9"},  # valid integers, but out of range for the tiny models
    ],
)
def test_bad_query_parameters_fall_back_to_defaults(query):
    at = open_page(app(**query), "pages/attention.py")
    assert not at.exception
    assert chart_title(charts(at)[0]) == "demo/tiny-gpt2 · layer 0 · head 0"
    assert selectbox(at, "Layer").value == 0 and selectbox(at, "Head").value == 0
    refused = [e.value for e in at.error]
    if query.get("model"):  # a link naming no model says so, quoted as text, and shows the default
        assert len(refused) == 1 and "Showing demo/tiny\\-gpt2 instead" in refused[0], refused
        assert query["model"] not in refused[0]  # escaped, never read as Markdown
    else:
        assert refused == []


def test_changing_layer_and_head_redraws_without_rerunning_the_model(monkeypatch):
    at = open_page(app(), "pages/attention.py")
    before = chart_rows(charts(at)[0])
    calls = []
    original = opt_lens.capture
    monkeypatch.setattr(opt_lens, "capture", lambda *a, **k: calls.append(a) or original(*a, **k))
    selectbox(at, "Layer").set_value(1).run()
    selectbox(at, "Head").set_value(3).run()
    assert_clean(at)
    assert chart_title(charts(at)[0]).endswith("layer 1 · head 3") and chart_rows(charts(at)[0]) != before
    for page in ("pages/predictions.py", "pages/tokens.py", "pages/attention.py"):  # nor does changing page
        open_page(at, page)
        assert_clean(at)
    assert calls == []  # the Tokens page only tokenizes, for either model


def test_changing_the_model_changes_the_view():
    at = open_page(app(), "pages/tokens.py")
    gpt2_chips = chips(at)
    at.sidebar.selectbox[0].set_value("demo/tiny-opt").run()
    assert_clean(at)
    assert at.session_state.model == "demo/tiny-opt" and at.query_params["model"] == "demo/tiny-opt"
    opt_chips = chips(at)
    assert opt_chips != gpt2_chips and "&lt;/s&gt;" in opt_chips  # OPT's </s> chip, escaped


def test_changing_the_prompt_changes_the_predictions():
    at = open_page(app(), "pages/predictions.py")
    at.sidebar.text_area[0].set_value("Bob gave the ball to").run()
    assert_clean(at)
    alone = opt_lens.load("demo/tiny-gpt2")  # a model object of its own, outside the app's caches

    def top_tokens(prompt):
        return [p.token for p in opt_lens.top_k_next(alone, opt_lens.capture(alone, prompt), k=10)]

    shown = [row["token"] for row in chart_rows(charts(at)[0])]
    assert shown == top_tokens("Bob gave the ball to")
    assert shown != top_tokens(state.DEFAULT_PROMPT)  # the two prompts really differ in what they predict


def with_model(name: str, page: str = "pages/predictions.py") -> AppTest:
    """A page opened on a model ID that is not in the list. AppTest 1.67 cannot type a new option into a
    selectbox, nor rerun one holding it: the name comes in through the URL, as a shared link's would, and
    tests/test_browser.py types names for real."""
    return open_page(app(model=name), page)


def test_unknown_model_id_shows_a_message_not_an_exception():
    at = with_model("someone/no-such-model")
    assert not at.exception
    assert any("Hub" in e.value for e in at.error)
    assert at.sidebar.selectbox[0].value == "someone/no-such-model"


def test_invalid_model_id_is_refused_in_the_sidebar():
    at = with_model("../../etc/passwd")
    assert not at.exception
    assert any("not a model ID" in e.value for e in at.sidebar.error)
    assert not at.main.error and any("demo/tiny-gpt2 has 2 layers" in c.value for c in at.caption)  # the default


@pytest.mark.parametrize(
    "event, expected",
    [
        ({"selection": {"picked": [{"layer": 1, "head": 2}]}}, (1, 2)),
        ({"selection": {"picked": []}}, None),
        ({"selection": {"picked": [{"layer": 9, "head": 0}]}}, None),
        ({"selection": {"picked": [{"layer": "x", "head": 0}]}}, None),
        (None, None),
    ],
)
def test_a_click_on_the_head_map_opens_that_head(event, expected):
    assert state.clicked_head(event, n_layers=2, n_heads=4) == expected


def test_the_sidebar_counts_the_prompt_in_the_model_s_tokens():
    prompt = "Tokenizers count differently: 日本語 😀"
    at = open_page(app(prompt=prompt), "pages/predictions.py")
    assert_clean(at)
    n_tokens = len(opt_lens.load("demo/tiny-gpt2").tokenizer(prompt)["input_ids"])
    assert f"The prompt is {n_tokens} of the 128 tokens demo/tiny\\-gpt2 reads." in at.sidebar.caption[0].value


def test_the_tokens_page_runs_no_model_and_shows_what_the_tokenizer_gives(monkeypatch):
    runs = []
    real_capture = opt_lens.capture
    monkeypatch.setattr(opt_lens, "capture", lambda *a, **k: runs.append(a) or real_capture(*a, **k))
    prompt = "A prompt no other test uses, for the tokenizers alone."
    caches.model_cache.clear()  # a fresh server: the Tokens page loads no weights either
    at = open_page(app(prompt=prompt), "pages/tokens.py")
    assert_clean(at)
    assert runs == [] and caches.model_cache().keys() == []
    for row, name in enumerate(("demo/tiny-gpt2", "demo/tiny-opt")):
        tokenizer = opt_lens.load(name).tokenizer
        expected_ids = tokenizer(prompt)["input_ids"]  # transformers' own tokenization
        assert re.findall(r"<sub[^>]*>(\d+)</sub>", chips(at, row)) == [str(i) for i in expected_ids], name


def test_a_long_prompt_folds_its_chips_and_finds_a_token(monkeypatch):
    monkeypatch.setattr(text, "FOLD_TOKENS", 50)  # the demo models read 128 tokens at most
    prompt = "The cat sat on the mat. " * 60
    at = open_page(app(prompt=prompt), "pages/tokens.py")
    assert_clean(at)
    folded = [block for block in at.main.children.values()
              if getattr(block, "type", "") == "flex_container" and block.proto.flex_container.border]
    assert len(folded) == 2  # both rows of chips scroll in a box of their own
    next(box for box in at.text_input if box.label == "Find a token").set_value("cat").run()
    assert_clean(at)
    tokenizer = opt_lens.load("demo/tiny-gpt2").tokenizer
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(prompt)["input_ids"][:128])  # what the model reads
    expected = sum("cat" in piece for piece in pieces)
    assert any(f"{expected} containing “cat”" in m.value for m in at.markdown)
    assert chips(at).count("outline:2px") == expected


def test_prompt_with_markup_is_shown_as_text():
    prompt = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    at = open_page(app(prompt=prompt), "pages/tokens.py")
    assert_clean(at)
    for row in (chips(at, 0), chips(at, 1)):  # both models' chips
        assert not re.search(r"<(?!/?(div|span|sub)\b)", row), "only the chips' own tags may appear unescaped"
        assert "&lt;" in row
    assert at.sidebar.text_area[0].value == prompt


def test_prompt_longer_than_the_context_warns_on_every_view_and_still_draws():
    at = open_page(app(prompt="The cat sat on the mat. " * 200), "pages/attention.py")
    assert_clean(at)
    assert at.slider, "a long prompt gets a window slider"
    context = opt_lens.load("demo/tiny-gpt2").arch.max_positions
    cut = [w.value for w in at.warning if f"reads at most {context}" in w.value]
    assert len(cut) == 1 and "demo/tiny\\-gpt2" in cut[0], [w.value for w in at.warning]
    expected = {"pages/predictions.py": 1, "pages/tokens.py": 2, "pages/compare.py": 2}  # one per model shown
    for page, count in expected.items():
        at = open_page(at, page)
        assert_clean(at)
        assert len([w for w in at.warning if "reads at most" in w.value]) == count, page
    for page in ("pages/home.py", "pages/architecture.py"):  # no capture, no warning
        assert not [w for w in open_page(at, page).warning if "reads at most" in w.value]


def test_offline_with_an_empty_cache_the_dropdown_offers_only_what_loads():
    at = open_page(app(), "pages/predictions.py")
    assert at.sidebar.selectbox[0].options == ["demo/tiny-gpt2", "demo/tiny-opt"]  # no Hub, nothing cached
    assert "runs on the two bundled demo models" in at.sidebar.info[0].value
    at = with_model("gpt2")  # a typed ID is still tried, and says why it fails
    assert not at.exception
    assert any("Cannot reach the Hugging Face Hub" in e.value for e in at.error)


def test_architecture_adds_a_typed_model_id_or_says_why_not():
    at = open_page(app(), "pages/architecture.py")
    at.text_input[0].set_value("facebook/opt-2.7b").run()  # its config needs the Hub: a warning, the rest stays
    assert not at.exception and any("facebook/opt\\-2\\.7b" in w.value for w in at.warning)
    assert at.dataframe[0].value.columns.tolist() == ["demo/tiny-gpt2", "demo/tiny-opt"]
    at.text_input[0].set_value("<b>../x</b>").run()
    assert not at.exception and any("is not a model ID" in w.value for w in at.warning)


def test_architecture_highlights_the_rows_where_the_models_differ():
    table = open_page(app(), "pages/architecture.py").dataframe[0]
    highlighted = {int(row) for row in re.findall(r"_row(\d+)_col0\b", table.proto.arrow_data.styler.styles)}
    differ = {i for i, (_, row) in enumerate(table.value.iterrows()) if row.nunique() > 1}
    assert highlighted == differ and 0 < len(differ) < len(table.value)


def test_every_table_can_be_downloaded_as_csv():
    at = app()
    for page in PAGES[1:]:
        open_page(at, page)
        assert_clean(at)
        buttons = at.get("download_button")
        assert len(buttons) >= len(at.dataframe), page


def test_a_model_too_large_for_the_memory_budget_is_refused_with_its_size(monkeypatch):
    monkeypatch.setenv("OPT_LENS_MEMORY_LIMIT_MB", "1")  # the demo models need ~2 MB of weights
    caches.model_cache.clear()
    try:
        at = open_page(app(), "pages/predictions.py")
        assert not at.exception
        assert any("needs about" in e.value and "Try a smaller model" in e.value for e in at.error)
        at = open_page(at, "pages/architecture.py")  # configs alone still work
        assert_clean(at)
    finally:
        monkeypatch.delenv("OPT_LENS_MEMORY_LIMIT_MB")
        caches.model_cache.clear()


def test_the_budget_cache_evicts_the_least_recently_used_before_going_over():
    cache = caches.BudgetCache(budget_bytes=10)
    built = []

    def get(key, size):
        return cache.get(key, lambda: built.append(key) or key, lambda _: size)

    get("a", 4), get("b", 4), get("a", 4)  # "a" is used again: "b" is now the oldest
    get("c", 4)
    assert cache.keys() == ["a", "c"] and built == ["a", "b", "c"]


def test_an_evicted_value_a_session_still_holds_is_handed_out_again_not_built_again():
    class Capture:  # any value that takes a weak reference, as captures and models do
        pass

    cache = caches.BudgetCache(budget_bytes=10)
    built = []

    def get(key):
        return cache.get(key, lambda: built.append(key) or Capture(), lambda _: 6)

    held = get("a")
    get("b")  # evicts "a", which a page still draws from; nobody holds "b"
    assert cache.keys() == ["b"] and "a" in cache
    assert get("a") is held and built == ["a", "b"]  # the same object, not a second copy
    assert cache.keys() == ["a"]  # back in the cache, "b" out again
    assert "b" not in cache and get("b") is not None and built == ["a", "b", "b"]  # gone: built again


def test_a_typed_model_id_is_quoted_as_text_not_as_markdown():
    at = with_model("[click me](javascript:alert(1)) $x$")
    assert not at.exception
    shown = [e.value for e in at.sidebar.error]
    assert shown and all("\\[click me\\]\\(javascript\\:alert\\(1\\)\\) \\$x\\$" in e for e in shown), shown


def test_predictions_after_an_earlier_token_and_the_focus_token_view():
    at = open_page(app(prompt="The cat sat on the mat"), "pages/predictions.py")
    slider = next(s for s in at.select_slider if s.label == "Guess what follows")
    before = charts(at)[0].proto.spec
    slider.set_value(1).run()  # options are positions, shown as "1 ␣cat"
    assert_clean(at)
    assert charts(at)[0].proto.spec != before
    assert any("really came next" in c.value for c in at.caption)
    at = open_page(at, "pages/attention.py")
    focus = next(s for s in at.select_slider if s.label == "Focus token (query)")
    focus.set_value(focus.options[2]).run()
    assert_clean(at)
    assert any(chart_title(c).startswith("Where “2 ") for c in charts(at))


def test_a_download_reports_its_progress_and_the_page_still_draws(monkeypatch):
    seen = []
    real_load = opt_lens.load

    def downloading_load(name, *, progress=None, allow_local=True):
        assert allow_local is False and progress is not None  # the app never reads local folders
        for done in (0, 1_000_000, 2_000_000):
            progress(done, 2_000_000, "model.safetensors")
            seen.append(done)
        return real_load(name, allow_local=False)

    monkeypatch.setattr(caches.opt_lens, "load", downloading_load)
    caches.model_cache.clear()
    try:
        at = open_page(app(), "pages/predictions.py")
        assert_clean(at)
        assert seen == [0, 1_000_000, 2_000_000]
        assert not at.get("progress")  # the bar is gone once the model is in memory
    finally:
        caches.model_cache.clear()


def test_parameter_chart_switches_between_shares_and_counts():
    at = open_page(app(), "pages/architecture.py")
    assert '"stack": "normalize"' in charts(at)[0].proto.spec
    at.radio[0].set_value("number of parameters").run()
    assert_clean(at)
    assert '"stack": "normalize"' not in charts(at)[0].proto.spec


def test_a_failed_build_is_not_cached_and_can_be_retried():
    cache = caches.BudgetCache(budget_bytes=10)

    def fail():
        raise opt_lens.OptLensError("no such model")

    with pytest.raises(opt_lens.OptLensError):
        cache.get("x", fail, lambda _: 1)
    assert cache.keys() == [] and cache.get("x", lambda: "ok", lambda _: 1) == "ok"


@pytest.mark.parametrize(
    "query, page",
    [
        ({"model_b": "demo/tiny-gpt2"}, "pages/compare.py"),  # one model against itself
        ({"prompt": "a"}, "pages/attention.py"),  # a single token for GPT-2
        ({"prompt": "a"}, "pages/compare.py"),
        ({"prompt": "😀 Ωmega 中文 $x$ **b** [l](u)"}, "pages/compare.py"),
        ({"prompt": "   "}, "pages/predictions.py"),
    ],
)
def test_edge_cases_draw_without_errors(query, page):
    at = open_page(app(**query), page)
    assert_clean(at)


def test_a_fresh_server_finds_every_page_before_its_entry_point_has_run():
    """Before the entry point declares the navigation, Streamlit knows the pages by their file names in pages/:
    a first request for an address that is not a file's stem shows "Page not found" over the page."""
    assert [path for _, _, _, path in navigation.PAGES] == [Path(script).stem for script, _, _, _ in navigation.PAGES]
