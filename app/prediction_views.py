"""The Predictions page's charts and tables, built once per (model, prompt, view settings) for every student."""

from __future__ import annotations

import altair as alt
from app import tables
from app.caches import cached_capture, shared_chart, shared_model

CELL_CHARACTERS = 7  # longer guesses are cut in the lens cells; the tooltip keeps the whole token


@shared_chart
def guesses_chart(name: str, prompt: str, k: int, position: int) -> alt.Chart:
    """The model's ``k`` most likely next tokens after ``position``, most likely on top."""
    predictions = tables.predictions_table(name, prompt, k, position)
    last_token = cached_capture(name, prompt, ui=False).tokens[position]
    return (
        alt.Chart(predictions)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", axis=alt.Axis(format="%"), title="probability"),
            y=alt.Y("token:N", sort=None, title=f"next token after “{last_token}”", axis=alt.Axis(labelOverlap=False)),
            tooltip=["rank", "token", "id", alt.Tooltip("probability:Q", format=".2%"),
                     alt.Tooltip("logit:Q", format=".2f")],
        )
        .properties(height=22 * len(predictions) + 30)
    )


def lens_window(seq_len: int, position: int, width: int) -> tuple[int, int]:
    """The ``width`` positions the lens shows (``start`` included, ``end`` not), following the inspected
    ``position``: its last column, or one of the first ones."""
    end = min(max(position + 1, width), seq_len)
    return max(end - width, 0), end


@shared_chart
def lens_chart(name: str, prompt: str, start: int, end: int, tuned: bool, position: int) -> alt.Chart:
    """The lens map of positions ``start`` to ``end``: a layer's top guess in each cell, coloured by the
    probability it gives the final answer, the inspected ``position`` outlined; a click selects a column
    (selection ``clicked``)."""
    labels = tables.token_labels(cached_capture(name, prompt, ui=False))
    lens = tables.logit_lens_table(name, prompt, start, end, tuned)
    lens = lens.assign(
        cell=[guess if len(guess) <= CELL_CHARACTERS else guess[: CELL_CHARACTERS - 1] + "…" for guess in lens.guess],
        embeddings=lens.layer == 0,
    )
    clicked = alt.selection_point(name="clicked", fields=["position"], on="click")
    base = alt.Chart(lens).encode(
        x=alt.X("position:N", sort=labels[start:end], title="position (the guess is for the token after it)",
                axis=alt.Axis(labelAngle=-45, labelOverlap=False, labelLimit=120)),
        y=alt.Y("layer:O", sort="descending", title="layer (0 = embeddings)"),
        tooltip=["layer", "position", alt.Tooltip("guess", title="this layer's top guess"),
                 alt.Tooltip("probability:Q", format=".2%", title="its probability"),
                 alt.Tooltip("final guess", title="the model's final answer"),
                 alt.Tooltip("probability of final guess:Q", format=".2%", title="probability of the final answer")],
    )
    inspected = alt.datum.position == labels[position]
    cells = base.mark_rect().encode(
        color=alt.condition(
            alt.datum.embeddings, alt.value("#e6e6e6"),
            alt.Color("probability of final guess:Q", scale=alt.Scale(scheme="greens", domain=[0, 1]),
                      title="probability of the final answer", legend=alt.Legend(orient="top", direction="horizontal")),
        ),
        stroke=alt.condition(inspected, alt.value("#e45756"), alt.value("white")),
        strokeWidth=alt.condition(inspected, alt.value(2.5), alt.value(0.5)),
    ).add_params(clicked)
    # A cell's word never spills into its neighbours: on a narrow screen Vega cuts it to the cell, with an ellipsis.
    words = base.mark_text(fontSize=11, limit=alt.expr("bandwidth('x') - 4")).encode(
        text="cell:N",
        color=alt.when(alt.datum.embeddings).then(alt.value("#9a9a9a"))
        .when(alt.datum["probability of final guess"] > 0.5).then(alt.value("white"))
        .otherwise(alt.value("black")),
    )
    # The height holds the rows, the position labels under them and the colour legend above them.
    n_layers = shared_model(name, ui=False).arch.n_layers
    return (cells + words).properties(height=max(240, 56 * (n_layers + 1)) + 70)
