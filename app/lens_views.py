"""The tuned lens beside the logit lens: which lens a page reads the layers through (in the URL), the lens for
a model (shared, looked up once), each layer's KL to the final distribution through both, and the sentence that
says where they disagree most. The Predictions and Compare pages draw it with ``draw_lens_comparison``.
"""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd
import streamlit as st

import opt_lens
from app import charts
from app.caches import HEAD_MATCH_TOKENS, cached_capture, shared_chart, shared_model, shared_result
from app.text import escape_markdown
from opt_lens.names import printable

LOGIT, TUNED = "logit lens", "tuned lens"
LENSES = [LOGIT, TUNED]
LENS_COLOURS = ["#9a9a9a", "#2ca02c"]


@dataclass(frozen=True)
class LensLookup:
    lens: opt_lens.TunedLens | None
    note: str | None  # why there is none: no lens exists for the model, or what stopped it from loading


@shared_result(ttl=600, max_entries=8, spinner=lambda name: f"Looking for a tuned lens for {name}…")
def shared_tuned_lens(name: str) -> LensLookup:
    """The tuned lens of model ``name`` for everyone, or why there is none. A failure is kept too (for ten
    minutes), so that a Hub that never answers costs one wait, not one per rerun."""
    try:
        lens = opt_lens.tuned_lens(shared_model(name, ui=False))
    except opt_lens.OptLensError as error:
        return LensLookup(None, f"{error} Without it, only the logit lens is shown.")
    if lens is None:
        return LensLookup(None, f"There is no tuned lens for {name}: the tuned-lens project trains lenses for a few "
                                "models only (gpt2 and facebook/opt-125m among them). Only the logit lens is shown.")
    return LensLookup(lens, None)


def lens_switch() -> str:
    """The lens the page reads the layers through, bound to the URL (``lens=tuned lens``); a value the link
    gives that names no lens is ignored, and said so."""
    asked = st.query_params.get("lens")
    chosen = st.segmented_control("Read the layers through", LENSES, default=LOGIT, key="lens", bind="query-params",
                                  help="The logit lens reads each layer with the model's own final step as it is; "
                                       "the tuned lens first applies a small correction trained for that layer.")
    if asked is not None and asked not in LENSES:
        st.caption(f"The link asked for the lens “{escape_markdown(printable(asked, 40))}”, which is "
                   "not one of these; showing the logit lens.")
    return chosen or LOGIT


def reads_through_tuned_lens(name: str) -> bool:
    """The switch (``lens_switch``) for model ``name``'s lens map: whether it reads through the tuned lens, which
    it cannot when the model has none (said under the switch)."""
    if lens_switch() != TUNED:
        return False
    if shared_tuned_lens(name).lens is None:
        st.caption("This model has no tuned lens to read its layers through (below: why), so the map shows the logit "
                   "lens.")
        return False
    return True


@shared_result(max_entries=64, spinner=lambda name, prompt, position, attention_prefix=None: f"Reading every layer of "
               f"{name} through both lenses…")
def lens_kl_table(name: str, prompt: str, position: int, attention_prefix: int | None = None) -> pd.DataFrame:
    """One row per lens and layer at ``position``: KL(final ‖ layer) in nats, the layer's top guess and its
    probability. Only the logit lens when the model has no tuned lens. ``attention_prefix``: that of the
    page's capture, so that the page's own capture is read rather than another taken."""
    import torch  # loaded with the model: the first page stays free of it

    lm = shared_model(name, ui=False)
    cap = cached_capture(name, prompt, ui=False, attention_prefix=attention_prefix)
    lens = shared_tuned_lens(name).lens
    logits = {LOGIT: opt_lens.logit_lens(lm, cap, position)}  # [layer + 1, vocab]
    if lens is not None:
        logits[TUNED] = opt_lens.tuned_lens_map(lm, cap, lens, position)
    rows = []
    for kind, values in logits.items():
        kl = opt_lens.kl_to_final(values)  # [layer + 1]
        top = torch.softmax(values.float(), dim=-1).max(dim=-1)  # [layer + 1]
        guesses = opt_lens.tokens.display_tokens(lm.tokenizer, top.indices.tolist())
        rows += [{"lens": kind, "layer": layer, "KL": float(kl[layer]), "guess": guesses[layer],
                  "probability": float(top.values[layer])} for layer in range(len(guesses))]
    return pd.DataFrame(rows)


@shared_chart
def kl_chart(name: str, prompt: str, position: int, attention_prefix: int | None) -> alt.Chart:
    """Each layer's KL to the final distribution at ``position`` (``lens_kl_table``), one line per lens, on a
    scale that keeps the embeddings' tens of nats and a late layer's hundredths both readable."""
    return (
        alt.Chart(lens_kl_table(name, prompt, position, attention_prefix))
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("KL:Q", title="KL to the final distribution (nats)", scale=alt.Scale(type="symlog")),
            color=alt.Color("lens:N", scale=alt.Scale(domain=LENSES, range=LENS_COLOURS), title=None,
                            legend=alt.Legend(orient="top")),
            tooltip=["lens", "layer", alt.Tooltip("KL:Q", format=".3f", title="KL (nats)"),
                     alt.Tooltip("guess", title="top guess"), alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(title=f"{name} · how far each layer is from the final answer", height=260)
    )


@shared_result(max_entries=64)
def disagreement(name: str, prompt: str, position: int, attention_prefix: int | None) -> str:
    """The sentence about the layer where the two lenses' top guesses (``lens_kl_table``) differ and their KLs
    differ most (the embeddings only for a one-layer model: row 0's logit lens echoes the input token)."""
    table = lens_kl_table(name, prompt, position, attention_prefix)
    logit = table[table.lens == LOGIT].set_index("layer")
    tuned = table[table.lens == TUNED].set_index("layer")
    last = logit.index.max()
    compared = range(1 if last > 1 else 0, last)
    layers = [layer for layer in compared if logit.guess[layer] != tuned.guess[layer]]
    final = escape_markdown(logit.guess[last])
    if not layers:
        # Row 0 is left out of the comparison, so "every layer" alone was wrong where the embeddings' guesses differ.
        layer = max(compared, key=lambda i: abs(logit.KL[i] - tuned.KL[i]))
        return (f"Here the two lenses name the same top guess at every layer{' after the embeddings' if compared.start else ''}; "
                f"the final answer is “{final}”. They differ most in how far layer {layer} is from the final "
                f"distribution: {logit.KL[layer]:.2f} nats through the logit lens, {tuned.KL[layer]:.2f} through the "
                "tuned lens.")
    layer = max(layers, key=lambda i: abs(logit.KL[i] - tuned.KL[i]))
    return (f"The logit lens says layer {layer} already predicts “{escape_markdown(logit.guess[layer])}” "
            f"({logit.probability[layer]:.0%}); the tuned lens says “{escape_markdown(tuned.guess[layer])}” "
            f"({tuned.probability[layer]:.0%}). The final answer is “{final}”, and the KL of that layer to the final "
            f"distribution is {logit.KL[layer]:.2f} nats through the logit lens, {tuned.KL[layer]:.2f} through the "
            "tuned lens.")


def draw_lens_comparison(name: str, prompt: str, position: int, attention_prefix: int | None = None) -> None:
    """Both lenses at ``position`` (counted from 0) of model ``name``: the KL chart and where they disagree; the
    logit lens alone, and why, when the model has no tuned lens."""
    lookup = shared_tuned_lens(name)
    if lookup.note:
        st.info(escape_markdown(lookup.note), icon=":material/info:")
    charts.draw(st, kl_chart(name, prompt, position, attention_prefix), width="stretch")
    if lookup.lens is not None:
        st.markdown(disagreement(name, prompt, position, attention_prefix))


@shared_chart
def two_models_kl_chart(name_a: str, name_b: str, prompt: str, colours: tuple[str, str]) -> alt.Chart:
    """Both lenses after the whole prompt for both models (``colours``: A's and B's), the lens as the line's
    dash, on a common depth scale; read from the Compare page's own captures (``HEAD_MATCH_TOKENS``)."""
    tables = [lens_kl_table(name, prompt, -1, HEAD_MATCH_TOKENS).assign(
        model=name, depth=lambda table: table.layer / table.layer.max()) for name in (name_a, name_b)]
    base = alt.Chart(pd.concat(tables)).encode(
        x=alt.X("depth:Q", axis=alt.Axis(format="%"), title="depth (share of the model's layers)"),
        y=alt.Y("KL:Q", title="KL to the final distribution (nats)", scale=alt.Scale(type="symlog")),
        color=alt.Color("model:N", scale=alt.Scale(domain=[name_a, name_b], range=list(colours)), title=None,
                        legend=alt.Legend(orient="top")),
        tooltip=["model", "lens", "layer", alt.Tooltip("KL:Q", format=".3f", title="KL (nats)"),
                 alt.Tooltip("guess", title="top guess"), alt.Tooltip("probability:Q", format=".1%")],
    )
    # The points in a layer of their own: on the line (point=True) they made the lens legend's symbols filled
    # points, the dashed and the solid lens the same dot, and as strokes, transparent ones.
    lines = base.mark_line().encode(
        strokeDash=alt.StrokeDash("lens:N", scale=alt.Scale(domain=LENSES, range=[[4, 3], [1, 0]]), title=None,
                                  legend=alt.Legend(orient="top", symbolType="stroke", symbolStrokeWidth=2,
                                                    symbolStrokeColor="#555")))
    return (lines + base.mark_point(filled=True)).properties(
        title="How far each layer is from the final answer, through both lenses", height=280)


def draw_two_models(name_a: str, name_b: str, prompt: str, colours: tuple[str, str]) -> None:
    """The Compare page's section: both lenses after the whole prompt for both models in the page's ``colours``
    (``two_models_kl_chart``); then where each model's two lenses disagree."""
    st.subheader("Logit lens and tuned lens")
    st.markdown("Before comparing when two models settle on their answer, check the lens: how far each layer is from "
                "the final answer after the whole prompt, through the logit lens (dashed) and, where one exists, the "
                "tuned lens (solid). **Notice** where the logit lens makes a model look later, or earlier, than the "
                "tuned lens does.")
    for name in (name_a, name_b):
        if note := shared_tuned_lens(name).note:
            st.info(escape_markdown(note), icon=":material/info:")
    charts.draw(st, two_models_kl_chart(name_a, name_b, prompt, colours), width="stretch")
    for name in (name_a, name_b):
        if shared_tuned_lens(name).lens is not None:
            st.markdown(f"**{escape_markdown(name)}**: {disagreement(name, prompt, -1, HEAD_MATCH_TOKENS)}")
