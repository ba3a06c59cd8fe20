"""Who writes the logit: direct logit attribution of one token's logit to every head, MLP and the embeddings.

The final norm's scale is frozen at the run's value (the convention of TransformerLens): with it fixed, the
readout is affine in the residual stream, which is a sum of parts, each read through the linear map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .capturing import Capture
from .errors import OptLensError
from .lens import checked_position
from .surgery import get_module
from .sweeps import check_token
from .tracing import Point, apply_module, exclusive, trace


@dataclass(frozen=True)
class Attribution:
    """Direct logit attribution of one token's logit at one position; every field is in logit units.

    ``embed + heads.sum() + mlps.sum() + rest == logit`` within float tolerance.
    """

    token_id: int
    position: int
    embed: float  # token (+ position) embeddings, as the first block receives them
    heads: torch.Tensor  # [layer, head]: each head's output (its slice through the output projection)
    mlps: torch.Tensor  # [layer]: each MLP layer's output, its own output bias included
    rest: float  # attention output-projection biases, the final norm's bias, project_out's and the unembedding's
    logit: float  # the model's own logit

    def total(self) -> float:
        return self.embed + float(self.heads.sum()) + float(self.mlps.sum()) + self.rest


def require_pre_ln(arch) -> None:
    """Refuse a post-LN model: no component's direct effect on a logit can be read from it linearly."""
    if arch.norm == "post":
        raise OptLensError(
            "Direct logit attribution needs a pre-LN model: this one normalises the residual stream after every "
            "block, so a component's output is rescaled by all later norms and the parts no longer add up to the logit."
        )


def attribute(lm, capture: Capture, token_id: int, position: int = -1) -> Attribution:
    """Direct logit attribution: how much each component writes toward ``token_id``'s logit at ``position``.

    The final norm's scale is frozen at the value it had in this run (the standard convention, as in
    TransformerLens): with it fixed, the readout (norm, OPT's project_out, unembedding) is affine in the
    residual stream, which is the sum of the embeddings and every head's, bias's and MLP's output; each part
    is read through the linear map and the affine constants go to ``rest``. The parts describe the capture's
    own run, ablations included. Post-LN models are refused: no such decomposition exists.
    """
    lm = capture.loaded_model(lm)
    arch = lm.arch
    require_pre_ln(arch)
    position = checked_position(position, capture.seq_len)
    token_id = check_token(lm, token_id)
    logit = float(capture.logits[position, token_id])
    parts = _parts(lm, capture, position)  # [component, d_model]: embed, heads, attn biases, MLPs
    if not _parts_add_up(parts):
        raise OptLensError(
            "Direct logit attribution needs blocks that add their attention and MLP outputs to the residual "
            "stream as they are: this model's blocks change them first (a norm after attention or the MLP), so "
            "the parts do not add up to the logit."
        )
    with exclusive(lm):
        read, constant = _frozen_readout(lm, parts["final"], token_id)
        through = read(torch.cat([parts["embed"][None], parts["heads"], parts["attn_bias"], parts["mlps"]]))
    n_heads = arch.n_layers * arch.n_heads
    return Attribution(
        token_id=token_id,
        position=position,
        embed=float(through[0]),
        heads=through[1 : 1 + n_heads].reshape(arch.n_layers, arch.n_heads),
        mlps=through[1 + n_heads + arch.n_layers :],
        rest=float(through[1 + n_heads : 1 + n_heads + arch.n_layers].sum()) + constant,
        logit=logit,
    )


def _parts(lm, capture: Capture, position: int) -> dict[str, torch.Tensor]:
    """Rerun the capture's input (with its ablation) and split the residual stream at ``position`` into parts."""
    arch = lm.arch
    last = Point("resid_post", arch.n_layers - 1)
    points = [Point("resid_pre", 0), last]
    points += [Point(name, layer) for layer in range(arch.n_layers) for name in ("z", "mlp_out")]
    run = trace(lm, capture.input_ids, record=points, edits=capture.ablation_edits(), stop=last)
    heads, biases = [], []
    for layer in range(arch.n_layers):
        z = run[Point("z", layer)][0, position]  # [head, d_head]
        alone = torch.zeros(arch.n_heads + 1, arch.n_heads, arch.d_head)  # row h: head h's slice only; last row: none
        alone[torch.arange(arch.n_heads), torch.arange(arch.n_heads)] = z
        out = apply_module(lm, arch.paths.attn_out_proj_of(layer), alone.flatten(1))  # [head + 1, d_model]
        heads.append(out[:-1] - out[-1])
        biases.append(out[-1])
    return {
        "embed": run[Point("resid_pre", 0)][0, position],
        "heads": torch.cat(heads),  # [layer * head, d_model]
        "attn_bias": torch.stack(biases),  # [layer, d_model]
        "mlps": torch.stack([run[Point("mlp_out", layer)][0, position] for layer in range(arch.n_layers)]),  # [layer, d_model]
        "final": run[last][0, position],
    }


def _parts_add_up(parts: dict[str, torch.Tensor]) -> bool:
    """Whether embeddings + every head + attention biases + every MLP rebuild the last block's output (they do
    where each block adds the output projection's and the MLP's outputs unchanged; OLMo-2's post-norms do not)."""
    rebuilt = parts["embed"] + parts["heads"].sum(0) + parts["attn_bias"].sum(0) + parts["mlps"].sum(0)  # [d_model]
    final = parts["final"]  # [d_model]
    return bool((rebuilt - final).norm() <= 1e-3 * final.norm() + 1e-4)


def _frozen_readout(lm, final: torch.Tensor, token_id: int) -> tuple[Callable, float]:
    """The readout of ``token_id``'s logit as (linear map of residual-stream parts ``[n, d_model] -> [n]``,
    constant), with the final norm's scale frozen at its value on ``final`` ``[d_model]``."""
    arch, model = lm.arch, lm.model
    norm = get_module(model, arch.paths.final_norm) if arch.paths.final_norm else None
    project_out = get_module(model, arch.paths.project_out) if arch.paths.project_out else None
    unembed = get_module(model, arch.paths.unembed)
    scale, centred, weight, bias = norm_terms(norm, final)

    def project(x: torch.Tensor) -> torch.Tensor:  # project_out and the unembedding row, without biases
        if project_out is not None:
            x = project_out(x) - project_out(torch.zeros_like(x[:1]))
        return x @ unembed.weight[token_id]

    def read(parts: torch.Tensor) -> torch.Tensor:
        if centred:
            parts = parts - parts.mean(-1, keepdim=True)
        return project(parts * weight / scale)

    constant = project(bias[None])[0]
    if project_out is not None:
        constant = constant + project_out(torch.zeros_like(final[None]))[0] @ unembed.weight[token_id]
    if getattr(unembed, "bias", None) is not None:
        constant = constant + unembed.bias[token_id]
    return read, float(constant)


def norm_terms(norm: nn.Module | None, x: torch.Tensor) -> tuple[torch.Tensor, bool, torch.Tensor, torch.Tensor]:
    """(frozen scale, subtracts the mean, weight, bias) of the final norm at ``x`` ``[d_model]``, checked
    against the module's own output; a norm that is not LayerNorm-like or RMSNorm-like is refused."""
    d = x.shape[-1]
    if norm is None:
        return torch.tensor(1.0), False, torch.ones(d), torch.zeros(d)
    centred = isinstance(norm, nn.LayerNorm)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", None)
    weight = norm.weight if getattr(norm, "weight", None) is not None else torch.ones(d)
    bias = norm.bias if getattr(norm, "bias", None) is not None else torch.zeros(d)
    if eps is None:
        raise OptLensError(f"This model's final norm ({type(norm).__name__}) is not one opt_lens can read linearly.")
    centred_x = x - x.mean() if centred else x
    scale = torch.sqrt(centred_x.pow(2).mean() + eps)
    if not torch.allclose(centred_x * weight / scale + bias, norm(x[None])[0], rtol=1e-4, atol=1e-5):
        raise OptLensError(f"This model's final norm ({type(norm).__name__}) is not one opt_lens can read linearly.")
    return scale, centred, weight, bias
