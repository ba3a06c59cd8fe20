"""Text shown to students: Markdown escaping, HTML token chips, names made safe for file names."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch, which Tokenized holds, loads when a page first needs a model
    from opt_lens.tokens import Tokenized

FOLD_TOKENS = 200  # beyond this many tokens, a row of chips scrolls in a box of its own, with a search box
# Every ASCII punctuation character that Markdown might read as syntax (CommonMark lets a backslash escape any).
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:&])")


def head_label(layer: int, head: int) -> str:
    """How a head is named on the pages and in the URL: ``L1.H1`` is head 1 of layer 1 (both count from 0)."""
    return f"L{layer}.H{head}"


def mlp_label(layer: int) -> str:
    """How a layer's MLP is named on the pages and in the URL: ``MLP 0`` is the MLP of layer 0."""
    return f"MLP {layer}"


def neuron_label(layer: int, neuron: int) -> str:
    """How an MLP neuron is named on the pages and in the URL: ``L1.N37`` is neuron 37 of layer 1's MLP."""
    return f"L{layer}.N{neuron}"


def escape_markdown(text) -> str:
    """Text (a model ID, an error quoting one, a token) made safe for st.error/st.markdown: shown as typed."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", str(text))


def token_chips(tokenized: Tokenized, find: str = "") -> str:
    """Token chips as HTML, those whose text contains ``find`` outlined; every piece of user text is
    escaped, so a prompt can never inject markup."""
    tokens, ids = tokenized.tokens, tokenized.input_ids.tolist()
    find = find.casefold()
    chips = "".join(
        f'<span title="id {token_id}" style="display:inline-block;margin:2px;padding:2px 6px;border-radius:6px;'
        f'background:{"#e8eefc" if i % 2 else "#fdf0e0"};font-family:monospace;white-space:pre'
        f'{";outline:2px solid #e45756" if find and find in token.casefold() else ""}">'
        f'{html.escape(token)}<sub style="color:#888;margin-left:3px">{token_id}</sub></span>'
        for i, (token, token_id) in enumerate(zip(tokens, ids))
    )
    return f'<div style="line-height:2.2">{chips}</div>'


def file_safe(name: str) -> str:
    """A model name usable in a download's file name ("facebook/opt-125m" -> "facebook_opt-125m")."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)
