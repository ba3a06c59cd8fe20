"""Architecture facts of several models (from their configs alone) as one table, and where the parameters live."""

from __future__ import annotations

import altair as alt
import pandas as pd

import opt_lens
from app.caches import cached_description, shared_chart, shared_result
from app.text import escape_markdown

FACT_LABELS = {
    "family": "Family", "n_params": "Parameters", "n_layers": "Layers", "n_heads": "Attention heads",
    "n_kv_heads": "Key/value heads", "d_model": "Hidden size (d_model)", "d_head": "Head size",
    "d_mlp": "MLP width", "embed_dim": "Word-embedding width", "vocab_size": "Vocabulary",
    "max_positions": "Context length", "positional": "Positions", "position_offset": "Position offset",
    "norm": "LayerNorm placement", "activation": "Activation", "tied_embeddings": "Tied embeddings",
    "model_class": "transformers class", "detection": "Structure found by", "layers_path": "Layer list",
    "attn_path": "Attention", "attn_out_proj_path": "Heads mixed by", "mlp_path": "MLP",
    "final_norm_path": "Final norm", "project_in_path": "Projection in",
    "project_out_path": "Projection out", "unembed_path": "Unembedding", "embed_path": "Token embedding",
    "positions_path": "Position embedding",
}


def architecture_table(names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Facts side by side (rows = facts, columns = models), the parameter breakdown, and errors met."""
    columns, parts, errors = {}, [], []
    for name in names:
        try:
            facts = cached_description(name)
        except opt_lens.OptLensError as error:
            errors.append(escape_markdown(f"{name}: {error}"))
            continue
        columns[name] = [_show_fact(key, facts.get(key)) for key in FACT_LABELS]
        parts += [{"model": name, "where": where, "parameters": count}
                  for where, count in facts["param_breakdown"].items() if count]
    table = pd.DataFrame(columns, index=list(FACT_LABELS.values()))
    return table, pd.DataFrame(parts), errors


@shared_result(max_entries=64)
def difference_highlights(names: tuple[str, ...]) -> pd.DataFrame:
    """The CSS of each cell of the described models' table (``Styler.apply(..., axis=None)``): a highlight on the
    rows where the models differ. Built once: the Styler's apply row by row was half its cost on every view."""
    table = architecture_table(list(names))[0]
    differs = table.nunique(axis=1) > 1
    return table.apply(lambda column: differs.map({True: "background-color: #fff3cd", False: ""}))


@shared_chart
def parameters_chart(names: tuple[str, ...], as_share: bool) -> alt.Chart:
    """Where the parameters of the described models ``names`` live: a bar per model, as shares of it
    (``as_share``) or as numbers."""
    parts = architecture_table(list(names))[1]
    x = (alt.X("parameters:Q", stack="normalize", title="share of parameters", axis=alt.Axis(format="%")) if as_share
         else alt.X("parameters:Q", title="parameters", axis=alt.Axis(format="~s")))
    return alt.Chart(parts).mark_bar().encode(
        y=alt.Y("model:N", title=None, axis=alt.Axis(labelLimit=250)),
        x=x,
        color=alt.Color("where:N", title="part", scale=alt.Scale(scheme="tableau10")),
        tooltip=["model", "where", alt.Tooltip("parameters:Q", format=",")],
    )


def _show_fact(key: str, value) -> str:
    if value is None:
        return "—"
    if key == "n_params":
        return f"{value:,}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "norm":
        return {"pre": "pre-LN (before each sublayer)", "post": "post-LN (after the residual add)"}.get(value, value)
    return str(value)
