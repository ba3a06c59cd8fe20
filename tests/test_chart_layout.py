"""Chart specs that must fit a laptop's 564-px column whatever the model or prompt (issue 20.7); the browser
check is tests/test_browser_layout.py."""

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


def test_twelve_small_maps_are_one_chart_as_wide_as_its_column_in_rows_of_four():
    frame, order = multiples_frame(12, 24)
    spec = charts.head_multiples(frame, order, 12).to_dict()
    assert "facet" not in spec and "width" not in spec  # a facet's maps have a fixed width: 880 px for 12
    maps, titles = spec["layer"]
    x_domain = maps["encoding"]["x"]["scale"]["domain"]
    cells = pd.DataFrame(spec["datasets"][maps["data"]["name"]])
    assert cells.x.min() == 0 and cells.x2.max() == x_domain[1]  # the maps fill the width, none outside
    gap = 24 / 8
    # Head h's map starts at column h % 4 and row h // 4; its cell (query q, key k) sits q and k cells in.
    corner = cells.assign(col=(cells.x - cells.key.map(order.index)) / (24 + gap),
                          row=(cells.y - cells["query"].map(order.index)).round(6))
    assert (corner.col == corner["head"] % 4).all()
    assert corner.groupby("head").row.nunique().eq(1).all()
    rows = corner.groupby("head").row.first()
    assert rows.rank(method="dense").sub(1).tolist() == [h // 4 for h in range(12)]
    names = pd.DataFrame(spec["datasets"][titles["data"]["name"]])
    assert names.name.tolist() == [f"head {h}" for h in range(12)]
    assert spec["height"] == 3 * charts.SMALL_MAP_ROW_HEIGHT


def test_a_model_with_fewer_heads_than_a_row_gets_them_all_in_one_row():
    frame, order = multiples_frame(2, 3)
    spec = charts.head_multiples(frame, order, 2).to_dict()
    cells = pd.DataFrame(spec["datasets"][spec["layer"][0]["data"]["name"]])
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
    """``charts.spec_of`` hands the chart's data frames to Streamlit as Arrow tables; Altair's default conversion
    (JSON records) is the reference, layer by layer, with a NaN weight and a filtered frame's index."""
    frame, order = multiples_frame(3, 4)
    frame.loc[1, "weight"] = float("nan")
    frame = frame[frame.index != 2]  # a filtered frame's index must not become a column
    chart = charts.head_multiples(frame, order, 3)
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
