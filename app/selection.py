"""What the sidebar selects: the model and prompt in use, and their captures, saying when a prompt was cut."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

import opt_lens
from app.caches import cached_capture, comparison_captures, shared_model, tokenized_prompt
from app.state import chosen_model, chosen_prompt
from app.text import escape_markdown

if TYPE_CHECKING:  # torch, which Tokenized holds, loads when a page first needs a model
    from opt_lens.tokens import Tokenized


def warn_if_truncated(name: str, cut: opt_lens.Capture | Tokenized) -> None:
    """Every view of a prompt says so when it was longer than the model's context."""
    if cut.truncated:
        st.warning(f"The prompt has {cut.n_prompt_tokens:,} tokens, but {escape_markdown(name)} reads at most "
                   f"{cut.seq_len:,}: what you see here is computed on the first {cut.seq_len:,} only.",
                   icon=":material/content_cut:")


def selected_model_and_capture() -> tuple[str, str, opt_lens.LoadedModel, opt_lens.Capture]:
    """The sidebar's model and prompt, the loaded model, and its capture of the prompt (saying if it was cut)."""
    name, prompt = chosen_model("model"), chosen_prompt()
    cap = cached_capture(name, prompt)
    warn_if_truncated(name, cap)
    return name, prompt, shared_model(name), cap


def tokens_on(name: str, prompt: str) -> Tokenized:
    """``prompt`` cut into model ``name``'s tokens, as the model would read it (tokenizer only, no forward
    pass), saying if it was cut."""
    tokenized = tokenized_prompt(name, prompt)
    warn_if_truncated(name, tokenized)
    return tokenized


def selected_comparison_captures(name_a: str, name_b: str, prompt: str) -> tuple:
    """Both models' captures for the Compare page, each saying if the prompt was cut."""
    captures = comparison_captures(name_a, name_b, prompt)
    for name, cap in zip((name_a, name_b), captures):
        warn_if_truncated(name, cap)
    return captures
