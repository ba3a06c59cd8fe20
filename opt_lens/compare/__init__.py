"""Compare two models on one prompt: aligned tokens, next-token agreement, matching heads, depth curves.

GPT-2 and OPT share most BPE pieces but number them differently, and OPT prepends ``</s>``; so tokens are
aligned by the characters they cover and distributions by what each vocabulary piece stands for, never by
ids or positions. One module per comparison; their public names are importable from here.
"""

from .alignment import AlignedToken, TokenAlignment, align_tokens
from .depth import DepthCurve, depth_curve, lens_depth_curve
from .head_matching import HeadMatches, match_heads
from .next_token import END_OF_TEXT, NextTokenComparison, compare_next_tokens, js_divergence, kl_divergence

__all__ = [
    "END_OF_TEXT", "AlignedToken", "DepthCurve", "HeadMatches", "NextTokenComparison", "TokenAlignment",
    "align_tokens", "compare_next_tokens", "depth_curve", "js_divergence", "kl_divergence", "lens_depth_curve",
    "match_heads",
]
