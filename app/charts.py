"""Charts more than one page draws, and the Attention page's; and how every chart reaches the page.

Pages draw Vega-Lite specs built once (``ChartSpec``), not Altair charts: building an Altair chart and
converting it to Vega-Lite (encoding, schema validation, JSON) cost a warm page 60-80% of its server CPU
(py-spy, Attention page), for every student who opened it. A spec is built once per (model, prompt, view
settings) by ``caches.shared_chart`` and drawn by every session at the cost of a small JSON copy. Its data is
kept as Arrow tables, the form Streamlit sends, converted once straight from the chart's data frames: through
JSON records it cost a new prompt's 12-head map most of its build, and converting the frames again at every
drawing was the largest part left of a warm Attention view (about 12% of its server CPU, py-spy).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd
import pyarrow as pa  # Streamlit's own dependency, the form it sends chart data in

from app import teacher


@dataclass(frozen=True)
class ChartSpec:
    """A chart as Vega-Lite: the spec without its data (JSON text, so no session can change the shared one)
    and its named datasets (immutable Arrow tables)."""

    spec_json: str
    datasets: tuple[tuple[str, pa.Table], ...]

    @property
    def nbytes(self) -> int:
        return len(self.spec_json) + sum(data.nbytes for _, data in self.datasets)

    def spec(self, projector: bool = False) -> dict:
        """A fresh spec dict for one drawing; ``projector``: axis and title type enlarged like the page's text
        (words inside cells keep their size: they are cut to their cell)."""
        spec = json.loads(self.spec_json)
        if projector:
            config = spec.setdefault("config", {})
            for part, sizes in teacher.PROJECTOR_TYPE.items():
                config[part] = {**config.get(part, {}), **sizes}
        # Streamlit sends a spec's named datasets as Arrow, the way it sends an Altair chart's.
        return {**spec, "datasets": dict(self.datasets)}


# Altair's data transformer and theme are process-wide: the conversion holds them for itself.
_CONVERSION_LOCK = threading.Lock()


def _to_arrow_tables(data, tables: dict[int, tuple[str, pa.Table]]):
    """An Altair data transformer: a data frame becomes a named Arrow table, converted as Streamlit converts a
    data frame (its index is no part of the chart, as in Altair's own records). Altair's default turns every
    row into a JSON record first: 0.27 of the 0.32 s a 12-head map of 82 tokens (40,836 cells) took to convert.
    """
    assert isinstance(data, pd.DataFrame), f"the app's charts are built on data frames, not {type(data)}"
    if id(data) not in tables:  # layers sharing one frame share its table
        tables[id(data)] = (f"table-{len(tables)}", pa.Table.from_pandas(data, preserve_index=False))
    return {"name": tables[id(data)][0]}


alt.data_transformers.register("arrow_tables", _to_arrow_tables)


def spec_of(chart: ChartSpec | alt.TopLevelMixin) -> ChartSpec:
    """An Altair ``chart`` converted as Streamlit converts one: no Altair theme (its fixed 300-px views would
    override the page's width), no row limit, and its data frames as Arrow tables; a ``ChartSpec`` as it is."""
    if isinstance(chart, ChartSpec):
        return chart
    tables: dict[int, tuple[str, pa.Table]] = {}
    with (_CONVERSION_LOCK, alt.data_transformers.enable("arrow_tables", tables=tables),
          alt.theme.enable("none")):
        spec = chart.to_dict()
    return ChartSpec(json.dumps(spec), tuple(tables.values()))


def draw(where, chart: ChartSpec | alt.TopLevelMixin, **options):
    """Draw ``chart`` (a shared ``ChartSpec``, or an Altair chart built for this session alone) in ``where``
    (``st`` or a column), its type enlarged for a projector in presentation mode.

    The projector setting travels with each drawing, not in Altair's process-wide theme: one teacher's
    presentation mode must not change every student's charts.
    """
    return where.vega_lite_chart(spec_of(chart).spec(projector=teacher.presenting()), **options)


TITLE_FIELD = "chart_title"


def vega_lite(spec: dict, title: str | None = None, **datasets: pd.DataFrame) -> ChartSpec:
    """A chart written as Vega-Lite directly, its data frames passed by the names ``spec`` gives them
    (``{"data": {"name": "cells"}}``).

    The charts a head switch redraws are written so, not in Altair: building them in Altair (encoding
    inference, then schema validation) was about half the server's time for a head switch on a 256-token
    prompt (py-spy, 20 switches). ``tests/test_chart_layout.py`` validates each against Vega-Lite's schema.

    ``title`` travels in the first dataset (its ``TITLE_FIELD``, one category), not in the spec: charts that
    differ from one head to the next only in their data and title then share one spec, and the browser
    updates a drawn chart's data in place rather than building a new Vega view for it.
    """
    tables = {name: pa.Table.from_pandas(frame, preserve_index=False) for name, frame in datasets.items()}
    if title is not None:
        first = next(iter(tables))
        titles = pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(tables[first]), np.int8)), pa.array([title]))
        tables[first] = tables[first].append_column(TITLE_FIELD, titles)
        rows = f"data({json.dumps(first)})"
        spec = {**spec, "title": {"text": {"expr": f"length({rows}) ? {rows}[0].{TITLE_FIELD} : ''"}}}
    return ChartSpec(json.dumps({**spec, "$schema": alt.SCHEMA_URL}), tuple(tables.items()))


def point_selection(name: str, fields: list[str]) -> dict:
    """A selection made by clicking a mark, reported by Streamlit under ``name`` (``on_select``)."""
    return {"name": name, "select": {"type": "point", "fields": fields, "on": "click"}}


def _field(name: str, kind: str, **options) -> dict:
    return {"field": name, "type": kind, **options}


def _tooltip_weight(field: str = "weight", **options) -> dict:
    return _field(field, "quantitative", format=".3f", **options)


def attention_heatmap(frame: pd.DataFrame, order: list[str], title: str, columns: list[str] | None = None,
                      selection: dict | None = None) -> ChartSpec:
    """One head's pattern (``tables.attention_frame``): queries down, keys across, in prompt order.

    ``columns`` orders the key axis when it differs from the rows (``tables.window_columns``: kept keys, a gap,
    the window, the rest); a frame with a ``rest`` field shows it in every cell's tooltip. ``selection``: a
    ``point_selection`` a click on a cell makes.
    """
    tooltip = [_field("query", "nominal"), _field("key", "nominal"), _tooltip_weight()]
    if "rest" in frame.columns:
        tooltip.append(_tooltip_weight("rest", title="row's attention outside the shown columns"))
    spec = {
        "data": {"name": "cells"},
        "mark": {"type": "rect"},
        "encoding": {
            # Where the map is narrow (two side by side on a laptop) Vega drops the key labels that would overlap.
            "x": _field("key", "nominal", title="key (the token attended to)",
                        axis={"labelAngle": -60, "labelOverlap": "greedy"},
                        **({"scale": {"domain": columns}} if columns else {"sort": order})),
            "y": _field("query", "nominal", sort=order, title="query (the token attending)",
                        axis={"labelOverlap": False}),
            # The legend above the map, not beside it: beside, it took half the width of a map on a laptop.
            "color": _field("weight", "quantitative", scale={"scheme": "blues", "domain": [0, 1]}, title="attention",
                            legend={"orient": "top", "direction": "horizontal"}),
            "tooltip": tooltip,
        },
        "height": 200 + 20 * len(order),
    }
    if selection is not None:
        spec["params"] = [selection]
    return vega_lite(spec, title, cells=frame)


def _bars(frame: pd.DataFrame, title: str, height: int, **encoding) -> ChartSpec:
    """Attention bars, one per key, hovering names its position and token."""
    tooltip = [_field("position", "quantitative"), _field("token", "nominal"), _tooltip_weight()]
    spec = {"data": {"name": "keys"}, "mark": {"type": "bar", "color": "#4c78a8"},
            "encoding": {**encoding, "tooltip": tooltip}, "height": height}
    return vega_lite(spec, title, keys=frame)


_ATTENTION_SCALE = {"title": "attention", "scale": {"domain": [0, 1]}}


def focus_row_bars(row: pd.DataFrame, title: str) -> ChartSpec:
    """One query's attention on every key up to itself (``tables.attention_row``), in prompt order."""
    return _bars(row, title, 220,
                 x=_field("position", "ordinal", title="key position (the token attended to; hover for the token)",
                          axis={"labelOverlap": True, "labelAngle": 0}),
                 y=_field("weight", "quantitative", **_ATTENTION_SCALE))


def top_keys_bars(top: pd.DataFrame, title: str) -> ChartSpec:
    """A long row's top keys (``tables.top_keys``) as horizontal bars, most attention on top."""
    return _bars(top, title, 40 + 22 * len(top),
                 y=_field("key", "nominal", sort="-x", title="key (position and token)", axis={"labelOverlap": False}),
                 x=_field("weight", "quantitative", **_ATTENTION_SCALE))


# Small maps to a row in ``head_multiples``: four fit a 564-px column (the Attention page at 1024x768) at ~130 px.
SMALL_MAPS_PER_ROW = 4
SMALL_MAP_ROW_HEIGHT = 150  # px: a map and its title


def head_multiples(frame: pd.DataFrame, order: list[str], n_heads: int) -> ChartSpec:
    """Every head of a layer as a small map (``tables.attention_frame``, queries and keys in ``order``), placed
    in rows of ``SMALL_MAPS_PER_ROW`` in one chart as wide as its column.

    A facet gives each map a fixed width, so twelve maps made a chart 880 px wide in a 564-px column; one chart
    with every map at its own offset is drawn to the container's width instead.
    """
    per_row = min(SMALL_MAPS_PER_ROW, n_heads)
    n = len(order)
    gap = max(1.0, n / 8)  # blank cells between two maps
    header = (n + gap) * 0.15  # room above each map for its title, in cells
    place = {label: i for i, label in enumerate(order)}
    width, height = per_row * (n + gap) - gap, -(-n_heads // per_row) * (n + gap + header) - gap
    x = _field("x", "quantitative", scale={"domain": [0, width], "nice": False, "zero": False}, axis=None)
    y = _field("y", "quantitative", axis=None,  # the first row on top
               scale={"domain": [0, height], "nice": False, "zero": False, "reverse": True})

    def corner(heads: pd.Series) -> tuple[pd.Series, pd.Series]:  # where each head's map starts
        return heads % per_row * (n + gap), heads // per_row * (n + gap + header) + header

    left, top = corner(frame["head"])
    cells = frame.assign(x=left + frame["key"].map(place), y=top + frame["query"].map(place))
    maps = {"data": {"name": "cells"}, "mark": {"type": "rect"}, "encoding": {
        "x": x, "x2": {"field": "x2"}, "y": y, "y2": {"field": "y2"},
        "color": _field("weight", "quantitative", scale={"scheme": "blues", "domain": [0, 1]}, legend=None),
        "tooltip": [_field("head", "quantitative"), _field("query", "nominal"), _field("key", "nominal"),
                    _tooltip_weight()],
    }}
    heads = pd.Series(range(n_heads))
    left, top = corner(heads)
    names = pd.DataFrame({"x": left + n / 2, "y": top - header / 2, "name": "head " + heads.astype(str)})
    titles = {"data": {"name": "names"}, "mark": {"type": "text", "fontSize": 11},
              "encoding": {"x": x, "y": y, "text": _field("name", "nominal")}}
    spec = {"layer": [maps, titles], "height": -(-n_heads // per_row) * SMALL_MAP_ROW_HEIGHT,
            "config": {"view": {"stroke": None}}}
    return vega_lite(spec, cells=cells.assign(x2=cells.x + 1, y2=cells.y + 1), names=names)


def head_score_map(shown: pd.DataFrame, metric: str, domain: list[float], open_head: tuple[int, int],
                   n_layers: int) -> ChartSpec:
    """Every head's score on one metric (``tables.head_score_table`` rows), the open head outlined in red and
    clickable (selection ``picked``).

    Which head is open is a field of the data (``open``), so that opening another head changes the chart's
    data alone, which the browser updates in place (see ``vega_lite``)."""
    layer, head = open_head
    spec = {
        "data": {"name": "scores"},
        "mark": {"type": "rect"},
        "encoding": {
            **layer_head_axes(),
            "color": _field("score", "quantitative", scale={"scheme": "viridis", "domain": domain}, title=metric),
            "tooltip": [_field("layer", "quantitative"), _field("head", "quantitative"), _tooltip_weight("score")],
            "opacity": {"condition": {"param": "picked", "value": 1.0}, "value": 0.6},
            "stroke": {"condition": {"test": "datum.open", "value": "#e45756"}, "value": "white"},
            "strokeWidth": {"condition": {"test": "datum.open", "value": 3}, "value": 1},
        },
        "params": [point_selection("picked", ["layer", "head"])],
        "height": max(160, 28 * n_layers),
    }
    return vega_lite(spec, scores=shown.assign(open=(shown["layer"] == layer) & (shown["head"] == head)))


def layer_head_axes() -> dict:
    """The encodings of a layers x heads map (Vega-Lite, which Altair's ``encode`` also takes): heads across,
    the last layer on top."""
    return {"x": _field("head", "ordinal", title="head", axis={"labelAngle": 0}),
            "y": _field("layer", "ordinal", title="layer", sort="descending")}
