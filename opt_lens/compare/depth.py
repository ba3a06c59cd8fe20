"""How each model's guess develops with depth, on a 0..1 scale that models of different depths share."""

from __future__ import annotations

from dataclasses import dataclass

from ..capturing import Capture
from ..lens import LensMap, logit_lens_map


@dataclass(frozen=True)
class DepthCurve:
    """How one model's guess at one position develops with depth, on a 0..1 scale shared across models."""

    model_name: str
    position: int
    depth: list[float]  # layer / n_layers: 0 = embeddings, 1 = after the last block (the model's output)
    final_token: str  # the model's own prediction
    final_token_prob: list[float]  # probability each depth gives to that prediction
    top_token: list[str]  # each depth's own top guess
    top_prob: list[float]
    settled_depth: float  # from here on the top guess equals the final prediction


def lens_depth_curve(lens: LensMap, model_name: str = "", column: int = -1) -> DepthCurve:
    """The depth curve of one column of a lens map (by default its last position)."""
    n_layers = lens.top_ids.shape[0] - 1
    assert n_layers >= 1, "a lens map needs the embeddings and at least one block"
    return DepthCurve(
        model_name=model_name,
        position=lens.positions[column],
        depth=[layer / n_layers for layer in range(n_layers + 1)],
        final_token=lens.top_tokens[-1][column],
        final_token_prob=lens.final_token_probs[:, column].tolist(),
        top_token=[row[column] for row in lens.top_tokens],
        top_prob=lens.top_probs[:, column].tolist(),
        settled_depth=lens.settled_layer()[column] / n_layers,
    )


def depth_curve(lm, capture: Capture, position: int = -1) -> DepthCurve:
    """One model's curve at ``position`` (default: the end of the prompt), reading only that position."""
    return lens_depth_curve(logit_lens_map(lm, capture, positions=[position]), lm.name)
