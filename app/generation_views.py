"""The Watch the model write page's tables and chart, built once per (model, prompt, settings, step) for every
student.

A run is named by ``caches.shared_generation``'s arguments; the page asks for its views after the run has
finished, so a build finds it in the cache and never writes again.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from app.caches import shared_chart, shared_generation, shared_result
from opt_lens.generation import Step


@shared_result(max_entries=256)
def steps_table(name: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None,
                seed: int) -> pd.DataFrame:
    gen = shared_generation(name, prompt, max_new_tokens, temperature, top_k, seed)
    return pd.DataFrame([
        {"step": i + 1, "token": step.token, "id": step.token_id, "probability": step.probability,
         "rank": step.rank, "model's own probability": step.model_probability}
        for i, step in enumerate(gen.steps)
    ])


def distribution_table(step: Step) -> pd.DataFrame:
    """The step's most likely tokens, plus the chosen one if it ranked lower (a hot sample often does)."""
    rows = [{"rank": candidate.rank, "token": candidate.token, "probability": candidate.probability,
             "chosen": candidate.token_id == step.token_id} for candidate in step.alternatives]
    if not any(row["chosen"] for row in rows):
        rows.append({"rank": step.rank, "token": step.token, "probability": step.probability, "chosen": True})
    table = pd.DataFrame(rows)
    table["label"] = [f"{row.rank}. {row.token}" for row in table.itertuples()]  # unique, in rank order
    return table


@shared_chart
def candidates_chart(name: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None, seed: int,
                     index: int) -> alt.Chart:
    """Step ``index``'s candidates as bars, the token written in red."""
    gen = shared_generation(name, prompt, max_new_tokens, temperature, top_k, seed)
    table = distribution_table(gen.steps[index])
    before = "the prompt" if index == 0 else f"“{gen.steps[index - 1].token}”"
    return (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", axis=alt.Axis(format="%"), title="probability"),
            y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False, labelLimit=220)),
            color=alt.Color("chosen:N", scale=alt.Scale(domain=[True, False], range=["#d62728", "#9ecae1"]),
                            legend=alt.Legend(title="written", labelExpr="datum.value ? 'this token' : 'others'")),
            tooltip=["rank", "token", alt.Tooltip("probability:Q", format=".2%")],
        )
        .properties(title=f"Step {index + 1}: the candidates after {before}", height=24 * len(table) + 40)
    )
