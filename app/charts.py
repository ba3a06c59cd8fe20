"""Charts more than one page draws, and the Attention page's."""

from __future__ import annotations

import altair as alt
import pandas as pd

from app import teacher


def draw(where, chart: alt.TopLevelMixin, **options):
    """Draw ``chart`` in ``where`` (``st`` or a column), its type enlarged for a projector in presentation mode.

    Every page draws its charts through here: Altair's themes are process-wide, so one teacher's projector
    setting must travel with each chart rather than change every student's.
    """
    return where.altair_chart(teacher.for_projector(chart) if teacher.presenting() else chart, **options)


def attention_heatmap(frame: pd.DataFrame, order: list[str], title: str, columns: list[str] | None = None) -> alt.Chart:
    """One head's pattern (``tables.attention_frame``): queries down, keys across, in prompt order.

    ``columns`` orders the key axis when it differs from the rows (``tables.window_columns``: kept keys, a gap,
    the window, the rest); a frame with a ``rest`` field shows it in every cell's tooltip.
    """
    tooltip = ["query", "key", alt.Tooltip("weight:Q", format=".3f")]
    if "rest" in frame.columns:
        tooltip.append(alt.Tooltip("rest:Q", format=".3f", title="row's attention outside the shown columns"))
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            # Where the map is narrow (two side by side on a laptop) Vega drops the key labels that would overlap.
            x=alt.X("key:N", title="key (the token attended to)", axis=alt.Axis(labelAngle=-60, labelOverlap="greedy"),
                    **({"scale": alt.Scale(domain=columns)} if columns else {"sort": order})),
            y=alt.Y("query:N", sort=order, title="query (the token attending)", axis=alt.Axis(labelOverlap=False)),
            # The legend above the map, not beside it: beside, it took half the width of a map on a laptop.
            color=alt.Color("weight:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="attention",
                            legend=alt.Legend(orient="top", direction="horizontal")),
            tooltip=tooltip,
        )
        .properties(title=title, height=200 + 20 * len(order))
    )


def focus_row_bars(row: pd.DataFrame, title: str) -> alt.Chart:
    """One query's attention on every key up to itself (``tables.attention_row``), in prompt order."""
    return (
        alt.Chart(row)
        .mark_bar(color="#4c78a8")
        .encode(
            x=alt.X("position:O", title="key position (the token attended to; hover for the token)",
                    axis=alt.Axis(labelOverlap=True, labelAngle=0)),
            y=alt.Y("weight:Q", title="attention", scale=alt.Scale(domain=[0, 1])),
            tooltip=["position", "token", alt.Tooltip("weight:Q", format=".3f")],
        )
        .properties(title=title, height=220)
    )


def top_keys_bars(top: pd.DataFrame, title: str) -> alt.Chart:
    """A long row's top keys (``tables.top_keys``) as horizontal bars, most attention on top."""
    return (
        alt.Chart(top)
        .mark_bar(color="#4c78a8")
        .encode(
            y=alt.Y("key:N", sort="-x", title="key (position and token)", axis=alt.Axis(labelOverlap=False)),
            x=alt.X("weight:Q", title="attention", scale=alt.Scale(domain=[0, 1])),
            tooltip=["position", "token", alt.Tooltip("weight:Q", format=".3f")],
        )
        .properties(title=title, height=40 + 22 * len(top))
    )


def layer_head_axes() -> dict:
    """The encodings of a layers x heads map: heads across, the last layer on top."""
    return {"x": alt.X("head:O", title="head", axis=alt.Axis(labelAngle=0)),
            "y": alt.Y("layer:O", title="layer", sort="descending")}
