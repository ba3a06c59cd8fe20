"""Chart specs that must fit a laptop's 564-px column whatever the model or prompt (issue 20.7); the browser
check is tests/test_browser_layout.py."""

import json

import altair as alt
import pandas as pd
import torch

from app import causal_views, charts


def multiples_frame(n_heads: int, n: int) -> tuple[pd.DataFrame, list[str]]:
    """What ``tables.attention_frame`` gives for every head over ``n`` positions: causal cells, labelled."""
    order = [f"{i} tok" for i in range(n)]
    cells = [(h, q, k) for h in range(n_heads) for q in range(n) for k in range(q + 1)]
    frame = pd.DataFrame({"head": [h for h, _, _ in cells], "query": [order[q] for _, q, _ in cells],
                          "key": [order[k] for _, _, k in cells], "weight": [1 / (q + 1) for _, q, _ in cells]})
    return frame, order


def spec_with_frames(chart: charts.ChartSpec) -> dict:
    """A hand-written chart's spec, its datasets as data frames."""
    spec = chart.spec()
    return {**spec, "datasets": {name: table.to_pandas() for name, table in spec["datasets"].items()}}


def test_twelve_small_maps_are_one_chart_as_wide_as_its_column_in_rows_of_four():
    frame, order = multiples_frame(12, 24)
    spec = spec_with_frames(charts.head_multiples(frame, order, 12))
    assert "facet" not in spec and "width" not in spec  # a facet's maps have a fixed width: 880 px for 12
    maps, titles = spec["layer"]
    x_domain = maps["encoding"]["x"]["scale"]["domain"]
    cells = spec["datasets"][maps["data"]["name"]]
    assert cells.x.min() == 0 and cells.x2.max() == x_domain[1]  # the maps fill the width, none outside
    gap = 24 / 8
    # Head h's map starts at column h % 4 and row h // 4; its cell (query q, key k) sits q and k cells in.
    corner = cells.assign(col=(cells.x - cells.key.map(order.index)) / (24 + gap),
                          row=(cells.y - cells["query"].map(order.index)).round(6))
    assert (corner.col == corner["head"] % 4).all()
    assert corner.groupby("head").row.nunique().eq(1).all()
    rows = corner.groupby("head").row.first()
    assert rows.rank(method="dense").sub(1).tolist() == [h // 4 for h in range(12)]
    names = spec["datasets"][titles["data"]["name"]]
    assert names.name.tolist() == [f"head {h}" for h in range(12)]
    assert spec["height"] == 3 * charts.SMALL_MAP_ROW_HEIGHT


def test_a_model_with_fewer_heads_than_a_row_gets_them_all_in_one_row():
    frame, order = multiples_frame(2, 3)
    spec = spec_with_frames(charts.head_multiples(frame, order, 2))
    cells = spec["datasets"][spec["layer"][0]["data"]["name"]]
    assert cells.x2.max() == spec["layer"][0]["encoding"]["x"]["scale"]["domain"][1] == 2 * 3 + 1
    assert spec["height"] == charts.SMALL_MAP_ROW_HEIGHT


def loss_spec(n_tokens: int) -> dict:
    losses = torch.rand(n_tokens - 1)  # [seq - 1]
    frame = causal_views.loss_frame([f"{i} tok" for i in range(n_tokens)], losses, losses / 2)
    return causal_views.loss_chart(frame, "loss").to_dict()


def test_a_short_prompts_loss_chart_names_every_token():
    x = loss_spec(causal_views.LABELLED_LOSSES + 1)["encoding"]["x"]
    assert x["field"] == "token" and x["type"] == "nominal" and x["axis"]["labelOverlap"] is False


def test_a_long_prompts_loss_chart_counts_positions_instead_of_naming_a_thousand_tokens():
    spec = loss_spec(1009)
    x = spec["encoding"]["x"]
    assert x["field"] == "position" and x["type"] == "quantitative"  # Vega picks a few ticks that fit
    assert x["scale"]["domain"] == [1, 1008]
    assert "token" in [tip["field"] for tip in spec["encoding"]["tooltip"]]  # hovering names the token


def test_a_shared_spec_carries_each_layers_rows_as_altairs_own_conversion_does():
    """``charts.spec_of`` hands an Altair chart's data frames to Streamlit as Arrow tables; Altair's default
    conversion (JSON records) is the reference, layer by layer, with a NaN weight and a filtered frame's index."""
    frame, _ = multiples_frame(3, 4)
    frame.loc[1, "weight"] = float("nan")
    frame = frame[frame.index != 2]  # a filtered frame's index must not become a column
    names = pd.DataFrame({"head": range(3), "name": ["head 0", "head 1", "head 2"]})
    chart = (alt.Chart(frame).mark_rect().encode(x="key:N", y="query:N", color="weight:Q")
             + alt.Chart(names).mark_text().encode(x="head:O", text="name:N"))
    with alt.data_transformers.enable("default", max_rows=None), alt.theme.enable("none"):
        reference = chart.to_dict()
    shared = charts.spec_of(chart)
    spec = shared.spec()
    assert len(shared.datasets) == 2
    for layer, expected_layer in zip(spec["layer"], reference["layer"]):
        rows = spec["datasets"][layer["data"]["name"]].to_pylist()
        expected = reference["datasets"][expected_layer["data"]["name"]]
        assert pd.DataFrame(rows).equals(pd.DataFrame(expected))
        assert {**layer, "data": None} == {**expected_layer, "data": None}
    assert spec.keys() == reference.keys()


def hand_written_charts() -> dict[str, charts.ChartSpec]:
    """Every chart ``app/charts.py`` writes as Vega-Lite itself, on small frames of the shapes the app gives."""
    frame, order = multiples_frame(3, 4)
    one_head = frame[frame["head"] == 0].drop(columns="head")
    row = pd.DataFrame({"position": [0, 1, 2], "token": ["a", "b", "c"], "weight": [0.5, 0.25, 0.25]})
    scores = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "score": [0.1, 0.9, 0.4, 0.2]})
    return {
        "heatmap": charts.attention_heatmap(one_head, order, "L0.H0"),
        "window heatmap": charts.attention_heatmap(
            one_head.assign(rest=0.0), order, "L0.H0", [*order, "rest"], charts.point_selection("row", ["query"])),
        "focus row": charts.focus_row_bars(row, "where c looks"),
        "top keys": charts.top_keys_bars(row.assign(key=["0 a", "1 b", "2 c"]), "where c looks"),
        "small multiples": charts.head_multiples(frame, order, 3),
        "head scores": charts.head_score_map(scores, "induction", [0, 1], (1, 0), 2),
    }


def test_every_hand_written_chart_is_valid_vega_lite_and_names_only_data_it_carries():
    from altair.utils.schemapi import validate_jsonschema
    from altair.vegalite.v6.schema.core import load_schema

    schema = load_schema()
    for what, chart in hand_written_charts().items():
        spec = chart.spec()
        datasets = spec.pop("datasets")
        validate_jsonschema(spec, schema)  # raises on a misspelt channel, property or type
        used = [part["data"]["name"] for part in spec.get("layer", [spec])]
        assert sorted(used) == sorted(datasets), what


def test_the_open_head_is_outlined_and_a_click_on_a_cell_selects_its_head():
    spec = hand_written_charts()["head scores"].spec()
    assert spec["params"] == [{"name": "picked", "select": {"type": "point", "fields": ["layer", "head"], "on": "click"}}]
    stroke = spec["encoding"]["stroke"]
    assert stroke["condition"] == {"test": "datum.open", "value": "#e45756"} and stroke["value"] == "white"
    scores = spec["datasets"]["scores"].to_pandas()  # the open head, layer 1 head 0, is the third row
    assert scores["open"].tolist() == [False, False, True, False]


def test_a_head_switch_changes_the_data_of_its_charts_not_their_specs():
    """The browser updates a drawn chart's data in place when its spec is unchanged; a new spec builds a new view."""
    frame, order = multiples_frame(3, 4)
    row = pd.DataFrame({"position": [0, 1, 2], "token": ["a", "b", "c"], "weight": [0.5, 0.25, 0.25]})
    scores = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "score": [0.1, 0.9, 0.4, 0.2]})

    def head_charts(head: int) -> list[charts.ChartSpec]:
        return [charts.attention_heatmap(frame[frame["head"] == head].drop(columns="head"), order, f"L0.H{head}"),
                charts.focus_row_bars(row.assign(weight=row.weight[::-1 if head else 1].values), f"H{head} looks"),
                charts.head_score_map(scores, "induction", [0, 1], (0, head), 2)]

    before, after = head_charts(0), head_charts(1)
    assert [chart.spec_json for chart in after] == [chart.spec_json for chart in before]
    for old, new in zip(before, after):
        assert old.datasets[0][1] != new.datasets[0][1]
    # Each title is read from its chart's data by a Vega expression in the spec.
    title = json.loads(after[0].spec_json)["title"]["text"]["expr"]
    assert title == "length(data(\"cells\")) ? data(\"cells\")[0].chart_title : ''"
    assert set(after[0].datasets[0][1].column(charts.TITLE_FIELD).to_pylist()) == {"L0.H1"}
    assert set(after[1].datasets[0][1].column(charts.TITLE_FIELD).to_pylist()) == {"H1 looks"}
