"""The Attention page's tables and charts, built once per (model, prompt, head, window) for every student."""

from __future__ import annotations

import pandas as pd

from app import charts, tables
from app.caches import cached_capture, shared_chart, shared_model, shared_result


@shared_result(max_entries=256)
def pattern_table(name: str, prompt: str, layer: int, head: int, window: tables.AttentionWindow | None) -> pd.DataFrame:
    """One head's pattern: the whole map (``window`` None, a short prompt), or a long prompt's window of it."""
    cap = cached_capture(name, prompt, ui=False)
    if window is None:
        return tables.attention_frame(cap, layer, [head], (0, cap.seq_len))
    return tables.attention_window_frame(cap, layer, head, window)


@shared_chart
def pattern_chart(name: str, prompt: str, layer: int, head: int,
                  window: tables.AttentionWindow | None) -> charts.ChartSpec:
    cap = cached_capture(name, prompt, ui=False)
    labels, table = tables.token_labels(cap), pattern_table(name, prompt, layer, head, window)
    title = f"{name} · layer {layer} · head {head}"
    if window is None:
        return charts.attention_heatmap(table, labels, title)
    return charts.attention_heatmap(table, labels[window.first : window.last + 1], title,
                                    tables.window_columns(cap, window))


@shared_result(max_entries=256)
def focus_row(name: str, prompt: str, layer: int, head: int, query: int) -> pd.DataFrame:
    return tables.attention_row(cached_capture(name, prompt, ui=False), layer, head, query)


@shared_chart
def focus_chart(name: str, prompt: str, layer: int, head: int, query: int) -> charts.ChartSpec:
    """One query's row: a bar per key, or its top keys when it has too many for a bar each."""
    row = focus_row(name, prompt, layer, head, query)
    title = f"Where “{tables.token_labels(cached_capture(name, prompt, ui=False))[query]}” looks · layer {layer} · head {head}"
    if len(row) > tables.TOP_KEYS_FROM:
        return charts.top_keys_bars(focus_top(name, prompt, layer, head, query), title)
    return charts.focus_row_bars(row, title)


@shared_result(max_entries=256)
def focus_top(name: str, prompt: str, layer: int, head: int, query: int) -> pd.DataFrame:
    """A long row's keys with the most attention (``tables.top_keys``)."""
    return tables.top_keys(focus_row(name, prompt, layer, head, query))


@shared_chart
def layer_chart(name: str, prompt: str, layer: int, first: int, last: int) -> charts.ChartSpec:
    """Every head of ``layer`` as a small map of positions ``first`` to ``last``."""
    cap = cached_capture(name, prompt, ui=False)
    n_heads = shared_model(name, ui=False).arch.n_heads
    frame = tables.attention_frame(cap, layer, list(range(n_heads)), (first, last + 1))
    return charts.head_multiples(frame, tables.token_labels(cap)[first : last + 1], n_heads)


@shared_chart
def head_score_chart(name: str, prompt: str, metric: str, layer: int, head: int) -> charts.ChartSpec:
    """Every head's score on ``metric``, the open head (``layer``, ``head``) outlined."""
    shown = tables.head_score_table(name, prompt).query("metric == @metric")
    # Fractions of attention share one fixed scale, so a weak head never looks strong; entropy has its own.
    domain = [0, max(float(shown.score.max()), 1e-6)] if metric == "entropy" else [0, 1]
    return charts.head_score_map(shown, metric, domain, (layer, head), shared_model(name, ui=False).arch.n_layers)
