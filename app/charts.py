"""Charts more than one page draws."""

from __future__ import annotations

import altair as alt
import pandas as pd


def attention_heatmap(frame: pd.DataFrame, order: list[str], title: str) -> alt.Chart:
    """One head's pattern (``tables.attention_frame``): queries down, keys across, in prompt order."""
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("key:N", sort=order, title="key (the token attended to)",
                    axis=alt.Axis(labelAngle=-60, labelOverlap=False)),
            y=alt.Y("query:N", sort=order, title="query (the token attending)", axis=alt.Axis(labelOverlap=False)),
            color=alt.Color("weight:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="attention"),
            tooltip=["query", "key", alt.Tooltip("weight:Q", format=".3f")],
        )
        .properties(title=title, height=140 + 20 * len(order))
    )


def layer_head_axes() -> dict:
    """The encodings of a layers x heads map: heads across, the last layer on top."""
    return {"x": alt.X("head:O", title="head", axis=alt.Axis(labelAngle=0)),
            "y": alt.Y("layer:O", title="layer", sort="descending")}
