"""Captures turned into tables for charts (the costly ones cached per model and prompt), and CSV downloads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

import opt_lens
from app.caches import cached_capture, shared_model, shared_result
from app.lens_views import shared_tuned_lens

if TYPE_CHECKING:  # torch, which Tokenized holds, loads when a page first needs a model
    from opt_lens.tokens import Tokenized


def token_labels(cap: opt_lens.Capture) -> list[str]:
    """Unique axis labels: position and readable token ("3 ␣cat")."""
    return [f"{i} {token}" for i, token in enumerate(cap.tokens)]


def token_table(tokenized: Tokenized) -> pd.DataFrame:
    return pd.DataFrame({
        "position": range(tokenized.seq_len),
        "token": tokenized.tokens,
        "id": tokenized.input_ids.tolist(),
        "characters": [f"{start}–{end}" for start, end in tokenized.offsets],
        "text": [tokenized.text[start:end] for start, end in tokenized.offsets],
    })


def attention_frame(cap: opt_lens.Capture, layer: int, heads: list[int], window: tuple[int, int]) -> pd.DataFrame:
    """Long table of one layer's attention for the given heads, restricted to a window of positions
    (``start`` included, ``end`` not), as rows and as columns."""
    import torch  # loaded with the model: the first page stays free of it

    start, end = window
    labels = np.array(token_labels(cap)[start:end], dtype=object)
    rows = cap.attention_rows(layer, torch.arange(start, end))[heads][:, :, start:end]  # [head, query, key]
    query, key = np.tril_indices(end - start)  # causal: the zeros above the diagonal are not drawn
    weights = rows[:, query, key].numpy()  # [head, cell]
    return pd.DataFrame({
        "head": np.repeat(heads, len(query)),
        "query": np.tile(labels[query], len(heads)),
        "key": np.tile(labels[key], len(heads)),
        "weight": weights.reshape(-1),
    })


REST_KEY = "rest"  # the window heatmap's last column: each row's attention on every key it does not show
GAP_KEY = "⋯"  # an empty column between the keys kept from before the window and the window's own
TOP_KEYS_FROM = 64  # a focus row with more keys than this shows its top keys: more bars would be thinner than a pixel
TOP_KEYS = 20


@dataclass(frozen=True)
class AttentionWindow:
    """Which part of a long prompt's pattern the heatmap shows: the window's rows, and as columns the first
    token and the pinned keys before the window (kept in view, since idle heads rest on the first token),
    then the window's own keys."""

    first: int  # the window's first and last positions (0-based, both shown)
    last: int
    kept_keys: tuple[int, ...]  # key positions before the window that stay in view, in order

    @property
    def queries(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def keys(self) -> list[int]:
        return [*self.kept_keys, *self.queries]


def attention_window(first: int, last: int, pinned) -> AttentionWindow:
    """The window from ``first`` to ``last``, keeping position 0 and the pinned positions before it in view.

    ``pinned`` comes from a widget bound to the URL: anything that is not a position before the window is left
    out (a pinned key inside the window is already shown; one after it is in every row's future).
    """
    kept = {0, *(p for p in pinned if isinstance(p, int) and 0 <= p)}
    return AttentionWindow(first, last, tuple(sorted(p for p in kept if p < first)))


def window_columns(cap: opt_lens.Capture, window: AttentionWindow) -> list[str]:
    """The heatmap's column labels in order: kept keys, a gap when positions are skipped, the window, the rest."""
    labels = token_labels(cap)
    kept = [labels[p] for p in window.kept_keys]
    skipped = bool(window.kept_keys) and window.kept_keys[-1] + 1 < window.first
    return [*kept, *([GAP_KEY] if skipped else []), *(labels[p] for p in window.queries), REST_KEY]


def attention_window_frame(cap: opt_lens.Capture, layer: int, head: int, window: AttentionWindow) -> pd.DataFrame:
    """One head's attention in ``window``, one row per shown cell, plus a ``REST_KEY`` cell per query holding its
    attention on every key not shown (also in each cell's ``rest``): shown weights + rest sum to the row's 1."""
    import torch  # loaded with the model: the first page stays free of it

    labels = np.array(token_labels(cap), dtype=object)
    queries, keys = np.array(window.queries), np.array(window.keys)
    weights = cap.attention_rows(layer, torch.from_numpy(queries), heads=slice(head, head + 1))[0]  # [query, key]
    weights = weights.double().numpy()
    shown = np.zeros(weights.shape[1], dtype=bool)  # [key]
    shown[keys] = True
    rest = weights[:, ~shown].sum(axis=1)  # [query]
    cells = np.concatenate([weights[:, keys], rest[:, None]], axis=1)  # [query, shown key + rest]
    # Causal: the future above the diagonal is not drawn; every row ends with its rest.
    drawn = np.concatenate([keys[None, :] <= queries[:, None], np.ones((len(queries), 1), bool)], axis=1)
    row, column = np.nonzero(drawn)  # query by query, keys in order, as the map reads
    return pd.DataFrame({"query": labels[queries][row], "key": np.append(labels[keys], REST_KEY)[column],
                         "weight": cells[row, column], "rest": rest[row]})


def attention_row(cap: opt_lens.Capture, layer: int, head: int, query: int) -> pd.DataFrame:
    """How much one query token attends to each key up to itself."""
    import torch  # loaded with the model: the first page stays free of it

    weights = cap.attention_rows(layer, torch.tensor([query]), heads=slice(head, head + 1))[0, 0]  # [key]
    return pd.DataFrame({"position": range(query + 1), "token": cap.tokens[: query + 1],
                         "weight": weights[: query + 1].numpy()})


def top_keys(row: pd.DataFrame, k: int = TOP_KEYS) -> pd.DataFrame:
    """The ``k`` keys of a focus row (``attention_row``) with the most attention, most first, labelled
    "position token"."""
    top = row.nlargest(k, "weight", keep="first")
    return top.assign(key=[f"{position} {token}" for position, token in zip(top.position, top.token)])


@shared_result(max_entries=64)
def head_score_table(name: str, prompt: str) -> pd.DataFrame:
    lm, cap = shared_model(name, ui=False), cached_capture(name, prompt, ui=False)
    what = (f"Scoring every head of {name} ({lm.arch.n_layers * lm.arch.n_heads} heads) on {cap.seq_len:,} tokens, "
            "and on repeated random tokens for induction")
    bar = st.progress(0.0, text=f"{what}…")

    def progress(done: int, total: int) -> None:  # a long prompt takes tens of seconds: say how far it is
        bar.progress(done / total, text=f"{what}: layer {done} of {total} scored")

    try:
        scores = opt_lens.heads.head_scores(lm, cap, progress=progress)
    finally:
        bar.empty()
    rows = []
    for metric, values in scores.as_dict().items():
        for layer in range(values.shape[0]):
            for head in range(values.shape[1]):
                rows.append({"metric": metric, "layer": layer, "head": head, "score": float(values[layer, head])})
    return pd.DataFrame(rows)


@shared_result(max_entries=64)
def predictions_table(name: str, prompt: str, k: int, position: int = -1) -> pd.DataFrame:
    lm, cap = shared_model(name, ui=False), cached_capture(name, prompt, ui=False)
    rows = opt_lens.top_k_next(lm, cap, k=k, position=position)
    return pd.DataFrame([{"rank": p.rank, "token": p.token, "id": p.token_id, "probability": p.probability,
                          "logit": p.logit} for p in rows])


@shared_result(max_entries=64, spinner=lambda name, prompt, start, end, tuned=False: f"Reading every layer of {name} "
               f"through the {'tuned lens' if tuned else 'output head'} at {end - start} positions…")
def logit_lens_table(name: str, prompt: str, start: int, end: int, tuned: bool = False) -> pd.DataFrame:
    """Each layer's top guess at positions ``start`` to ``end``; ``tuned``: through the model's tuned lens."""
    lm, cap = shared_model(name, ui=False), cached_capture(name, prompt, ui=False)
    through = shared_tuned_lens(name).lens if tuned else None
    lens = opt_lens.logit_lens_map(lm, cap, positions=list(range(start, end)), lens=through)
    labels = token_labels(cap)
    rows = []
    for layer in range(lens.top_ids.shape[0]):
        for column, position in enumerate(lens.positions):
            rows.append({
                "layer": layer, "position": labels[position], "guess": lens.top_tokens[layer][column],
                "probability": float(lens.top_probs[layer, column]),
                "final guess": lens.top_tokens[-1][column],
                "probability of final guess": float(lens.final_token_probs[layer, column]),
            })
    return pd.DataFrame(rows)


def csv_button(table: pd.DataFrame | Callable[[], pd.DataFrame], label: str, file_name: str, *,
               index: bool = False) -> None:
    """A download button for one table (or a function building it), as CSV (UTF-8, so token pieces like ␣
    survive), written when it is clicked rather than on every rerun (a layer switch would otherwise write
    every table again)."""
    def csv() -> bytes:
        return (table() if callable(table) else table).to_csv(index=index).encode("utf-8")

    st.download_button(label, csv, file_name, "text/csv", icon=":material/download:", on_click="ignore")
