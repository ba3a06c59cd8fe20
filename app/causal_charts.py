"""The Cause and effect page's tables and charts, built once per (model, prompt, knock-out, token, view) and
shared by every student.

Only finished results become tables here: the page asks for them after its run (``causal_runs``) has returned
one, so a build finds the run in its cache and never starts it. A knock-out is given as ``causal_runs`` takes
it: ``heads``, ``mode``, ``mlps`` and ``neurons``, each sorted.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from app import causal_runs as runs
from app import causal_views as views
from app import charts, tables
from app.caches import cached_capture, shared_chart, shared_model, shared_result
from app.text import head_label

GUESSES_SHOWN = 10


def _token(name: str, token_id: int) -> str:
    return views.token_text(shared_model(name, ui=False).tokenizer, token_id)


# ------------------------------------------------------------------------------------------- knock out


@shared_result(max_entries=256)
def guesses_table(name: str, prompt: str, heads: tuple, mode: str, mlps: tuple, neurons: tuple) -> pd.DataFrame:
    """The next-token guesses before and after the knock-out (``causal_views.predictions_frame``)."""
    after = runs.ablated_capture(name, prompt, heads, mode, mlps, neurons, ui=False)
    return views.predictions_frame(shared_model(name, ui=False).tokenizer, cached_capture(name, prompt, ui=False).next_logits,
                                   after.next_logits, GUESSES_SHOWN)


@shared_result(max_entries=256)
def loss_table(name: str, prompt: str, heads: tuple, mode: str, mlps: tuple, neurons: tuple) -> pd.DataFrame:
    """Every token's loss before the knock-out, and after it when anything is knocked out."""
    after = runs.token_losses(name, prompt, heads, mode, mlps, neurons) if heads or mlps or neurons else None
    return views.loss_frame(tables.token_labels(cached_capture(name, prompt, ui=False)),
                            runs.token_losses(name, prompt), after)


@shared_chart
def loss_chart(name: str, prompt: str, heads: tuple, mode: str, mlps: tuple, neurons: tuple) -> alt.Chart:
    return views.loss_chart(loss_table(name, prompt, heads, mode, mlps, neurons), f"{name}: loss of each next token")


@shared_chart
def attention_chart(name: str, prompt: str, layer: int, head: int, start: int, window: int, run: str,
                    heads: tuple = (), mode: str = "zero", mlps: tuple = (), neurons: tuple = ()) -> charts.ChartSpec:
    """One head's attention over ``window`` positions from ``start``, in the run with the knock-out given
    (none: the plain run), titled with ``run`` ("before" or "after")."""
    capture = runs.ablated_capture(name, prompt, heads, mode, mlps, neurons, ui=False)
    order = tables.token_labels(capture)[start : start + window]
    pattern = tables.attention_frame(capture, layer, [head], (start, start + window))
    return charts.attention_heatmap(pattern, order, f"{head_label(layer, head)} {run}")


# ------------------------------------------------------------------------------------ which heads matter


@shared_result(max_entries=256)
def head_effects_table(name: str, prompt: str, token_id: int) -> pd.DataFrame:
    """The finished sweep of ``causal_runs.head_effects`` as one row per head."""
    return views.grid_frame(runs.head_effects(name, prompt, token_id), "change in log-prob")


@shared_chart
def head_effects_chart(name: str, prompt: str, token_id: int, marked: tuple) -> alt.Chart:
    """The sweep's map, clickable, the heads ``marked`` (knocked out in section 1) outlined."""
    effects = head_effects_table(name, prompt, token_id)
    limit = views.symmetric_limit((effects, "change in log-prob"))
    return views.head_map(effects, "change in log-prob", f"{name}: knocking out one head, effect on "
                          f"“{_token(name, token_id)}”", limit, clickable=True, marked=marked)


# ------------------------------------------------------------------------------- who writes the answer


@shared_result(max_entries=128)
def attribution_tables(name: str, prompt: str, token_id: int) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The heads' and the other parts' direct logit attribution, and the limit of their common colour scale."""
    attribution = runs.attribution(name, prompt, token_id)
    heads_frame, parts = views.grid_frame(attribution.heads, "logit"), views.attribution_parts(attribution)
    return heads_frame, parts, views.symmetric_limit((heads_frame, "logit"), (parts, "logit"))


@shared_chart
def attribution_heads_chart(name: str, prompt: str, token_id: int, marked: tuple) -> alt.Chart:
    heads_frame, _, limit = attribution_tables(name, prompt, token_id)
    return views.head_map(heads_frame, "logit", f"Heads writing “{_token(name, token_id)}”", limit, marked=marked)


@shared_chart
def attribution_parts_chart(name: str, prompt: str, token_id: int) -> alt.Chart:
    _, parts, limit = attribution_tables(name, prompt, token_id)
    return views.parts_chart(parts, "Embeddings, MLPs, biases", limit)


# -------------------------------------------------------------------------------------------- patching


@shared_result(max_entries=128)
def patching_tables(setup: runs.PatchingSetup) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The finished patching maps of ``setup`` (residual stream, heads) as rows, and their own colour limit."""
    resid, per_head = runs.patching(setup.name, setup.clean, setup.corrupted, setup.answer_id, setup.wrong_id)
    resid_frame = views.resid_patch_frame(resid, list(setup.labels))
    heads_frame = views.grid_frame(per_head, "fraction restored")
    return resid_frame, heads_frame, views.symmetric_limit((resid_frame, "restored"),
                                                           (heads_frame, "fraction restored"))


@shared_chart
def resid_patch_chart(setup: runs.PatchingSetup, limit: float | None) -> alt.Chart:
    """The residual-stream patching map, on ``limit`` (a scale shared with other maps) or its own."""
    resid_frame, _, own_limit = patching_tables(setup)
    return views.resid_patch_chart(resid_frame, list(setup.labels), f"{setup.name}: patching the residual stream",
                                   limit or own_limit)


@shared_chart
def head_patch_chart(setup: runs.PatchingSetup, limit: float | None) -> alt.Chart:
    _, heads_frame, own_limit = patching_tables(setup)
    return views.head_map(heads_frame, "fraction restored", f"{setup.name}: patching one head's output",
                          limit or own_limit)


# ----------------------------------------------------------------------------- two models side by side


@shared_chart
def knockout_fraction_chart(setup: runs.PatchingSetup) -> alt.Chart:
    """Each head's knock-out effect on logit(answer) - logit(wrong), in clean effects: log p(answer) - log
    p(wrong) is the logit difference, so the two finished sweeps' difference is it."""
    for_answer, for_wrong = (runs.head_effects(setup.name, setup.clean, token_id)
                             for token_id in (setup.answer_id, setup.wrong_id))
    knocked = views.grid_frame(views.fraction_of_clean(for_answer - for_wrong, setup.clean_effect), "fraction")
    return views.head_map(knocked, "fraction", "Knocking out one head", 1.0)


@shared_result(max_entries=128)
def attribution_difference_tables(setup: runs.PatchingSetup) -> tuple[pd.DataFrame, pd.DataFrame]:
    for_answer, for_wrong = (runs.attribution(setup.name, setup.clean, token_id)
                             for token_id in (setup.answer_id, setup.wrong_id))
    return views.attribution_difference(for_answer, for_wrong, setup.clean_effect)


@shared_chart
def direct_heads_chart(setup: runs.PatchingSetup) -> alt.Chart:
    direct, _ = attribution_difference_tables(setup)
    return views.head_map(direct, "fraction", "What each head writes (answer − wrong)", 1.0)


@shared_chart
def direct_parts_chart(setup: runs.PatchingSetup) -> alt.Chart:
    _, parts = attribution_difference_tables(setup)
    return views.parts_chart(parts, "What the rest writes (answer − wrong)", 1.0, "fraction",
                             "fraction of the clean effect")
