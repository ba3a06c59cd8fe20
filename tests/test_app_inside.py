"""The pages inside a head and an MLP and of information flow, driven by AppTest on the demo models and on
random-weight stand-ins for gpt2 and facebook/opt-125m served from the local Hugging Face cache."""

import json

import pyarrow as pa
import pytest

import opt_lens
from app import caches, inside_views
from test_app import app, assert_clean, chart_rows, chart_title, charts, open_page
from test_app_classroom import classroom_cache  # noqa: F401 (fixture)

PAGES = ["pages/inside.py", "pages/flow.py"]
REPEATED = "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp"


@pytest.mark.parametrize("model", list(opt_lens.DEMO_MODELS))
@pytest.mark.parametrize("page", PAGES)
def test_pages_draw_on_the_demo_models(page, model):
    at = open_page(app(model=model), page)
    assert_clean(at)
    assert charts(at)


@pytest.mark.parametrize("page", PAGES)
def test_pages_draw_on_random_weight_gpt2_and_opt_stand_ins(page, classroom_cache):
    for model in ("gpt2", "facebook/opt-125m"):
        at = open_page(app(model=model, model_b="gpt2", flow_two="true"), page)
        assert_clean(at)
        assert model in caches.model_cache().keys()  # the page ran on the stand-in


def test_inside_settings_round_trip_through_the_url():
    query = {"model": "demo/tiny-gpt2", "prompt": REPEATED, "layer": "1", "head": "2", "query": "24 ␣river",
             "mlp_layer": "1", "mlp_token": "3 na", "neuron": "17"}
    at = open_page(app(**query), "pages/inside.py")
    assert_clean(at)
    kept = {key: value for key, value in query.items() if key != "model"}  # the default model stays out of links
    assert {key: at.query_params.get(key) for key in kept} == kept
    assert at.session_state.query == "24 ␣river" and at.session_state.neuron == 17
    written = next(c for c in charts(at) if chart_rows(c) and "direction" in chart_rows(c)[0])
    top = max(chart_rows(written), key=lambda row: row["effect on the logit"])
    assert top["token"] == "␣lamp"  # the measured claim of the page's notice
    assert any("Neuron 17 of layer 1" in chart_title(c) for c in charts(at))


def test_hostile_url_values_fall_back_to_the_defaults():
    at = open_page(app(model="demo/tiny-gpt2", layer="9", head="-1", query="<b>x</b>", neuron="99999",
                       threshold="7"), "pages/inside.py")
    assert_clean(at)
    assert at.session_state.layer == 0 and at.session_state.head == 0
    assert at.session_state.query == at.select_slider[0].options[-1]  # the last token, the default
    assert 0 <= at.session_state.neuron < 512  # demo/tiny-gpt2's MLPs have 512 neurons
    at = open_page(app(model="demo/tiny-gpt2", threshold="7"), "pages/flow.py")
    assert_clean(at)
    assert 0.01 <= at.session_state.threshold <= 0.5


def test_flow_settings_round_trip_and_two_models_draw_side_by_side():
    at = open_page(app(model="demo/tiny-gpt2", threshold="0.1", flow_two="true", model_b="demo/tiny-opt"),
                   "pages/flow.py")
    assert_clean(at)
    assert at.query_params["threshold"] == "0.1" and at.query_params["flow_two"] == "true"
    assert at.session_state.threshold == 0.1 and at.session_state.flow_two is True
    assert len([c for c in charts(at) if "routes to the prediction" in str(chart_title(c))]) == 2


def test_views_rerun_no_forward_pass(monkeypatch):
    at = open_page(app(model="demo/tiny-gpt2"), "pages/inside.py")
    calls = []
    for function in ("capture", "capture_ids"):
        original = getattr(opt_lens, function)
        monkeypatch.setattr(opt_lens, function, lambda *a, _f=original, **k: calls.append(a) or _f(*a, **k))
    inside_views.steps_table.clear()
    at = open_page(at, "pages/flow.py")
    at.session_state.threshold = 0.2
    at.run()
    at = open_page(at, "pages/inside.py")
    assert_clean(at)
    assert calls == []


def test_a_post_ln_model_gets_the_library_s_reason_instead_of_tokens(monkeypatch):
    def refuse(*args, **kwargs):
        raise opt_lens.OptLensError("Direct logit attribution needs a pre-LN model: this one is post-LN.")

    for function in ("head_logits", "neuron_logits", "flow_graph"):
        monkeypatch.setattr(opt_lens, function, refuse)
    for cached in (inside_views.head_writes, inside_views.top_neurons, inside_views.flow_frames):
        cached.clear()
    for page in PAGES:
        at = open_page(app(model="demo/tiny-opt"), page)
        assert_clean(at)
        assert any("pre\\-LN model" in info.value or "post-LN" in info.value for info in at.info), [i.value for i in at.info]
    for cached in (inside_views.head_writes, inside_views.top_neurons, inside_views.flow_frames):
        cached.clear()


def test_the_lesson_step_opens_the_copying_head_and_its_claim_holds():
    from app import experiments

    step = len(experiments.EXPERIMENTS)
    experiment = experiments.EXPERIMENTS[-1].for_model("demo/tiny-gpt2")
    assert experiment.page == "pages/inside.py"
    at = open_page(app(lesson=str(step - 1)), experiments.EXPERIMENTS[-2].page)
    at.button(key="lesson-next").click().run()
    at = open_page(at, experiment.page)
    assert_clean(at)
    assert (at.session_state.layer, at.session_state.head) == (1, 2)  # the head the claim is about
    at.session_state.query = "24 ␣river"
    at.run()
    written = next(c for c in charts(at) if chart_rows(c) and "direction" in chart_rows(c)[0])
    top = max(chart_rows(written), key=lambda row: row["effect on the logit"])
    assert top["token"] == "␣lamp" and round(top["effect on the logit"], 2) == 2.28
    assert "+2.28" in experiment.notice and any("+2.28" in c.value for c in at.caption)


def test_the_head_map_keeps_the_first_token_and_each_row_sums_to_one():
    # 26 tokens: the map shows 24 rows. L1.H2 at the last token gives most of its attention to the first token,
    # which a window of positions 2-25 hid (the row summed to 0.28 while the steps below said 0.72 went to "0 b").
    at = open_page(app(model="demo/tiny-gpt2", prompt=REPEATED, layer="1", head="2"), "pages/inside.py")
    assert_clean(at)
    rows = chart_rows(next(c for c in charts(at) if "click a row to pick the query" in str(chart_title(c))))
    last = [row for row in rows if row["query"] == "25 ␣lamp"]
    assert round(sum(row["weight"] for row in last), 4) == 1
    first = next(row["weight"] for row in last if row["key"] == "0 b")
    steps = next(df.value for df in at.dataframe if "attention" in df.value.columns)
    assert first == pytest.approx(steps.attention[0], abs=1e-6) and first > 0.5


def test_opt_s_scaling_step_says_where_its_scaling_went_and_every_written_token_is_labelled():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(opt_lens.DEMO_MODELS["demo/tiny-opt"])
    d_head = config.hidden_size // config.num_attention_heads
    at = open_page(app(model="demo/tiny-opt", prompt=REPEATED, layer="1", head="2"), "pages/inside.py")
    assert_clean(at)
    steps = next(m.value for m in at.markdown if "**2.**" in m.value)
    # OPT scales its queries in q_proj: "multiplied by 1" alone read as a skipped step.
    assert f"1/√{d_head} = {d_head ** -0.5:.4g} in the query projection" in steps
    written = next(c for c in charts(at) if chart_rows(c) and "direction" in chart_rows(c)[0])
    assert json.loads(written.proto.spec)["encoding"]["y"]["axis"]["labelOverlap"] is False  # Vega hid every other


def test_the_flow_graph_lists_its_tokens_in_prompt_order():
    # On demo/tiny-opt the kept tokens run past 9: Vega merged the layers' sort lists away and drew them in
    # string order ("26 ␣lamp" above "3 na").
    at = open_page(app(model="demo/tiny-opt", prompt=REPEATED), "pages/flow.py")
    assert_clean(at)
    chart = next(c for c in charts(at) if "routes to the prediction" in str(chart_title(c)))
    spec = json.loads(chart.proto.spec)
    nodes = spec["layer"][2]["data"]["name"]  # the dots: one per state
    dataset = next(d for d in chart.proto.datasets if d.name == nodes)
    drawn = set(pa.ipc.open_stream(dataset.data.data).read_pandas().token)
    domains = [layer["encoding"]["y"]["scale"]["domain"] for layer in spec["layer"]]
    position = lambda label: int(label.split(" ", 1)[0])  # noqa: E731
    assert max(map(position, drawn)) >= 10
    for domain in domains:
        assert set(domain) == drawn and domain == sorted(domain, key=position)


@pytest.mark.parametrize("model", list(opt_lens.DEMO_MODELS))
def test_the_flow_page_s_demo_notice_holds(model):
    # The notice claimed an edge from the token after the earlier copy for both demo models: tiny-opt has none.
    from app.tables import token_labels

    lm, cap = caches.shared_model(model, ui=False), caches.cached_capture(model, REPEATED, ui=False)
    graph = opt_lens.flow_graph(lm, cap, threshold=0.04)
    last = cap.seq_len - 1
    top = max((e for e in graph.edges if e.kind == "attention" and e.target.position == last), key=lambda e: e.weight)
    predicted = lm.tokenizer.decode([graph.token_id]).replace(" ", "␣")
    at = open_page(app(model=model, prompt=REPEATED), "pages/flow.py")
    assert_clean(at)
    notice = next(c.value for c in at.caption if "edges kept at" in c.value)
    for claim in (f"predicts “{predicted}”", f"L{top.target.layer}.H{top.head}", f"“{token_labels(cap)[top.source.position]}”",
                  f"{top.weight:.2f} of that state"):
        assert claim in notice, (claim, notice)


def test_a_real_post_ln_model_is_refused_in_each_view_s_own_words(hub_answering, tiny_folder):
    # The library's reason names direct logit attribution, which neither page mentions (and the flow graph is not).
    hub_answering.add("someone/tiny-opt-350m", tiny_folder("opt-post-ln"))
    for page, view in (("pages/inside.py", "what it writes has no direct read-out"),
                       ("pages/flow.py", "cannot be split into routes")):
        at = open_page(app(model="someone/tiny-opt-350m", prompt=REPEATED), page)
        assert_clean(at)
        refusal = next(info.value.replace("\\", "") for info in at.info  # the markdown escapes, undone
                       if "post\\-LN" in info.value and "neuron" not in info.value)
        assert refusal.startswith("someone/tiny-opt-350m normalises the residual stream after every block")
        assert view in refusal and "Direct logit attribution" not in refusal


def test_the_step_bars_come_in_the_order_of_the_steps():
    at = open_page(app(model="demo/tiny-gpt2", prompt=REPEATED), "pages/inside.py")
    bars = next(json.loads(c.proto.spec) for c in charts(at) if "facet" in json.loads(c.proto.spec))
    assert bars["facet"]["row"]["sort"] == ["scaled", "attention"]  # alphabetical put the softmax above its input


def test_tiny_opt_s_notice_inside_a_head_holds():
    # The notice told tiny-opt's students that L1.H2 at the second "␣river" promotes "␣lamp": there it ranks 96th.
    lm, cap = caches.shared_model("demo/tiny-opt", ui=False), caches.cached_capture("demo/tiny-opt", REPEATED, ui=False)
    tokens = cap.tokens
    second_i = [p for p, t in enumerate(tokens) if t == "i"][1]
    second_river = [p for p, t in enumerate(tokens) if t == "␣river"][1]
    assert lm.tokenizer.decode([int(opt_lens.head_logits(lm, cap, 1, 2, second_i).argmax())]) == "ol"
    assert tokens[tokens.index("i") + 1] == "ol"  # what followed the first "i"
    assert tokens[int(cap.pattern(1, 2)[second_river].argmax())] == "␣lamp"
    lamp = lm.tokenizer.encode(" lamp", add_special_tokens=False)[0]
    assert lamp not in opt_lens.head_logits(lm, cap, 1, 2, second_river).topk(10).indices.tolist()
    at = open_page(app(model="demo/tiny-opt", prompt=REPEATED, layer="1", head="2"), "pages/inside.py")
    assert_clean(at)
    assert any("demo/tiny\\-opt's L1.H2 copies too" in c.value or "demo/tiny-opt's L1.H2 copies too" in c.value
               for c in at.caption)


def test_the_flow_legend_wraps_to_fit_half_a_laptop_s_width():
    at = open_page(app(model="demo/tiny-gpt2", prompt=REPEATED), "pages/flow.py")
    spec = json.loads(next(c for c in charts(at) if "routes to the prediction" in str(chart_title(c))).proto.spec)
    legend = spec["layer"][0]["encoding"]["color"]["legend"]
    assert legend["columns"] == 2  # in one row, two graphs side by side at 1024 px cut "residual" to "residua"
