"""Captures turned into tables for charts (the costly ones cached per model and prompt), and CSV downloads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

import opt_lens
from app.caches import cached_capture, shared_model

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
    """Long table of one layer's attention for the given heads, restricted to a window of positions."""
    start, end = window
    labels = token_labels(cap)
    frames = []
    for head in heads:
        weights = cap.pattern(layer, head)[start:end, start:end].numpy()
        query, key = weights.nonzero()  # causal: the zeros above the diagonal are not drawn
        frames.append(pd.DataFrame({
            "head": head,
            "query": [labels[start + q] for q in query],
            "key": [labels[start + k] for k in key],
            "weight": weights[query, key],
        }))
    return pd.concat(frames, ignore_index=True)


def attention_row(cap: opt_lens.Capture, layer: int, head: int, query: int) -> pd.DataFrame:
    """How much one query token attends to each key up to itself."""
    weights = cap.pattern(layer, head)[query, : query + 1].numpy()
    return pd.DataFrame({"position": range(query + 1), "token": cap.tokens[: query + 1], "weight": weights})


@st.cache_data(ttl=3600, max_entries=64, show_spinner="Scoring every head…")
def head_score_table(name: str, prompt: str) -> pd.DataFrame:
    lm, cap = shared_model(name, ui=False), cached_capture(name, prompt, ui=False)
    scores = opt_lens.heads.head_scores(lm, cap)
    rows = []
    for metric, values in scores.as_dict().items():
        for layer in range(values.shape[0]):
            for head in range(values.shape[1]):
                rows.append({"metric": metric, "layer": layer, "head": head, "score": float(values[layer, head])})
    return pd.DataFrame(rows)


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def predictions_table(name: str, prompt: str, k: int, position: int = -1) -> pd.DataFrame:
    lm, cap = shared_model(name, ui=False), cached_capture(name, prompt, ui=False)
    rows = opt_lens.top_k_next(lm, cap, k=k, position=position)
    return pd.DataFrame([{"rank": p.rank, "token": p.token, "id": p.token_id, "probability": p.probability,
                          "logit": p.logit} for p in rows])


@st.cache_data(ttl=3600, max_entries=64, show_spinner="Reading every layer through the output head…")
def logit_lens_table(name: str, prompt: str, start: int, end: int) -> pd.DataFrame:
    lm, cap = shared_model(name, ui=False), cached_capture(name, prompt, ui=False)
    lens = opt_lens.logit_lens_map(lm, cap, positions=list(range(start, end)))
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


def csv_button(table: pd.DataFrame, label: str, file_name: str, *, index: bool = False) -> None:
    """A download button for one table, as CSV (UTF-8, so token pieces like ␣ survive)."""
    st.download_button(label, table.to_csv(index=index).encode("utf-8"), file_name, "text/csv",
                       icon=":material/download:")
