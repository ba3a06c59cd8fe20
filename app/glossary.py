"""The words the pages use, explained for a student in a sentence or two; reachable from every page.

Definitions say what the app computes, so a student can check a view against them.
"""

from __future__ import annotations

import streamlit as st

TERMS: dict[str, str] = {
    "token": "A piece of text the model reads as one unit: a word, part of a word, a space with a word, or a single "
             "byte of a character. Each token has a number, its id, in the model's vocabulary.",
    "logit": "The raw score the model gives every token of its vocabulary as the next one. Higher means more likely; "
             "only the differences between logits matter.",
    "probability": "The logits turned into shares that add up to 100 % (by the softmax): how likely the model thinks "
                   "each token is to come next.",
    "KL divergence": "KL(A‖B), in nats: how surprised you would be, on average, using B's probabilities when A's "
                     "are the truth. 0 when A and B agree; it is not symmetric, and it grows without limit when B "
                     "gives almost nothing to a token A likes.",
    "Jensen-Shannon": "A symmetric cousin of KL: the mean KL of A and of B to their average. 0 when the two "
                      "distributions agree, at most ln 2 ≈ 0.693 nats when they share nothing.",
    "residual stream": "The vector each position carries through the model. Every layer reads it and adds its own "
                       "output to it; the logit lens reads it after each layer.",
    "layer": "One block of the model: attention heads, then an MLP, each adding to the residual stream. Layer 0 in "
             "the logit lens is the input embeddings, before any block.",
    "attention head": "Part of a layer that, for every token, decides how much to read from each earlier token "
                      "(weights that add up to 1) and copies a weighted mix of what it reads. A layer runs several "
                      "heads side by side.",
    "layer norm": "Rescales a vector to mean 0 and spread 1, then applies a learned scale and shift per dimension. "
                  "GPT-2 and most OPT models normalise before each sublayer (pre-LN); OPT-350m after the residual "
                  "add (post-LN).",
    "logit lens": "Reading the residual stream after each layer through the model's own final step (final layer "
                  "norm, unembedding): what the model would guess if it stopped there.",
    "tuned lens": "The logit lens with a small trained correction per layer (an affine map h + A h + b, fitted so "
                  "that the layer's read-out matches the model's final distribution) applied before the final step. "
                  "It reads middle layers more faithfully, because each layer stores its guess in a slightly "
                  "different form from the last layer's.",
}


def glossary() -> None:
    """The glossary as a popover: one click away from any page, out of the way otherwise."""
    with st.popover("Glossary", icon=":material/menu_book:", width="stretch"):
        for term, meaning in TERMS.items():
            st.markdown(f"**{term}**: {meaning}")
