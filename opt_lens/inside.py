"""Inside a head and an MLP: how one head computes its output, and what a head or a neuron writes.

Everything is computed from what a capture already holds, with no hook and no new forward pass: the
residual stream each block received (``Capture.resid``), the query and key states the capture's patterns
are rebuilt from (attention.py), and the model's own modules called directly on them (the norms, the value
projection, the output projection, the MLP's layers, as ``anatomy.py`` describes them), under the model's
lock. Each layer so rebuilt is checked against the block output the capture recorded, so a family whose
blocks do something the description misses is refused rather than shown wrong.

The places where a point of the run is read (``_block_input``, ``_layer_states``) are one helper each.

A head's or a neuron's effect on the logits is read like ``attribute``'s: through the final norm with its
scale frozen at the run's value, then OPT's ``project_out`` and the unembedding, without their biases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .anatomy import BlockInside, inside_of
from .attribution import norm_terms, require_pre_ln
from .attention import LayerStates
from .capturing import Capture
from .errors import OptLensError
from .lens import checked_position
from .surgery import get_module
from .tracing import exclusive

logger = logging.getLogger(__name__)


def _block_input(cap: Capture, layer: int) -> torch.Tensor:
    """``[seq, d_model]``: what block ``layer`` received (row ``layer + 1`` is what it returned)."""
    return cap.resid[layer]


def _layer_states(cap: Capture, layer: int) -> LayerStates:
    """The query and key states layer ``layer``'s attention received (after rotary embeddings)."""
    states = cap.patterns.layer(layer)
    if not isinstance(states, LayerStates):
        raise OptLensError("This capture stored its attention patterns only, without the query and key states.")
    return states


def checked(lm, cap: Capture, layer: int | None = None) -> None:
    """Refuse a capture these views cannot open: another model's, an ablated run, a cut attention."""
    if not cap.taken_on(lm):
        raise OptLensError("This capture was taken on another model (or one since unloaded): capture the prompt again.")
    if cap.ablation is not None:
        raise OptLensError("The views inside a block read an unablated capture: capture the prompt without knock-outs.")
    if cap.attention_tokens < cap.seq_len:
        raise OptLensError(f"This capture kept the attention of its first {cap.attention_tokens} tokens only.")
    if layer is not None and not 0 <= layer < lm.arch.n_layers:
        raise OptLensError(f"There is no layer {layer}: this model has layers 0-{lm.arch.n_layers - 1}.")


def _part(lm, layer: int, path: str) -> nn.Module:
    return get_module(lm.model, f"{lm.arch.paths.block(layer)}.{path}")


def linear_map(module: nn.Module, n_in: int) -> torch.Tensor:
    """``[n_in, n_out]``: the matrix of a linear layer without its bias, read from its weight (an ``nn.Linear``
    stores it transposed, GPT-2's ``Conv1D`` as is) and checked against a call of the module itself."""
    probe = torch.linspace(-1.0, 1.0, n_in)[None] * torch.rand(1, n_in)  # [1, n_in]
    wanted = module(probe) - module(torch.zeros_like(probe))  # [1, n_out]
    for matrix in (module.weight.T, module.weight):
        if matrix.shape[0] == n_in and torch.allclose(probe @ matrix, wanted, rtol=1e-4, atol=1e-5):
            return matrix
    raise OptLensError(f"This model's {type(module).__name__} is not a linear layer opt_lens can read.")


def _values(lm, inside: BlockInside, layer: int, x: torch.Tensor) -> torch.Tensor:
    """``[kv_head, seq, d_head]``: the value states of block ``layer`` on its input ``x`` ``[seq, d_model]``."""
    arch = lm.arch
    attn_in = _part(lm, layer, inside.attn_norm)(x) if arch.norm == "pre" else x
    index, chunks = inside.value_chunk
    module = _part(lm, layer, inside.value)
    # Only the value chunk's columns of a fused projection: GPT-2's c_attn would compute queries and keys too.
    matrix = linear_map(module, x.shape[-1]).chunk(chunks, dim=-1)[index]  # [d_model, kv_head * d_head]
    bias = module(torch.zeros(1, x.shape[-1]))[0].chunk(chunks, dim=-1)[index]  # [kv_head * d_head]
    value = torch.addmm(bias, attn_in, matrix)  # [seq, kv_head * d_head]
    return value.reshape(x.shape[0], arch.n_kv_heads, arch.d_head).transpose(0, 1)


@dataclass(frozen=True)
class LayerInside:
    """Block ``layer`` rebuilt at some query positions from the capture (every row checked against it)."""

    layer: int
    positions: torch.Tensor  # [pos]
    values: torch.Tensor  # [kv_head, seq, d_head]: value states at every position
    probs: torch.Tensor  # [head, pos, seq]: attention rows of the positions
    w_o: torch.Tensor  # [head, d_head, d_model]: the output projection, one block of rows per head
    attn_bias: torch.Tensor  # [d_model]: the output projection's bias (zeros without one)
    heads_out: torch.Tensor  # [head, pos, d_model]: each head's output through its slice of the projection
    mid: torch.Tensor  # [pos, d_model]: the residual stream after attention
    hidden: torch.Tensor  # [pos, d_mlp]: the MLP neurons' activations
    w_mlp: torch.Tensor  # [d_mlp, d_model]: the MLP output projection, one row per neuron
    mlp: torch.Tensor  # [pos, d_model]: the MLP's output, its bias included


def head_values(lm, inside: LayerInside) -> torch.Tensor:
    """``[head, seq, d_head]``: each query head's value states (grouped-query heads share theirs)."""
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    return inside.values[torch.arange(lm.arch.n_heads) // group]


def layer_inside(lm, cap: Capture, layer: int, positions: Sequence[int]) -> LayerInside:
    """Block ``layer`` at ``positions``, rebuilt from its input and checked against its recorded output."""
    checked(lm, cap, layer)
    arch, inside = lm.arch, inside_of(lm)
    positions = torch.as_tensor([checked_position(p, cap.seq_len) for p in positions], dtype=torch.long)
    x = _block_input(cap, layer)  # [seq, d_model]
    probs = _layer_states(cap, layer).rows(positions)  # [head, pos, seq]; a rebuild takes the lock itself
    with exclusive(lm):
        values = _values(lm, inside, layer, x)
        out_proj = get_module(lm.model, arch.paths.attn_out_proj_of(layer))
        w_o = linear_map(out_proj, arch.n_heads * arch.d_head).reshape(arch.n_heads, arch.d_head, -1)
        attn_bias = out_proj(torch.zeros(1, arch.n_heads * arch.d_head))[0]  # [d_model]
        group = arch.n_heads // arch.n_kv_heads
        z = torch.matmul(probs, values[torch.arange(arch.n_heads) // group])  # [head, pos, d_head]
        heads_out = torch.matmul(z, w_o)  # [head, pos, d_model]
        mid = x[positions] + heads_out.sum(0) + attn_bias  # [pos, d_model]
        if arch.norm == "post":
            mid = _part(lm, layer, inside.attn_norm)(mid)
        hidden = _mlp_hidden(lm, inside, layer, mid)  # [pos, d_mlp]
        mlp_out = _part(lm, layer, inside.mlp_out)
        w_mlp = linear_map(mlp_out, hidden.shape[-1])  # [d_mlp, d_model]
        mlp = mlp_out(hidden)  # [pos, d_model]
        out = mid + mlp if arch.norm == "pre" else _part(lm, layer, inside.mlp_norm)(mid + mlp)
    _check_rebuilt(cap, layer, positions, out)
    return LayerInside(layer, positions, values, probs, w_o, attn_bias, heads_out, mid, hidden, w_mlp, mlp)


def _mlp_hidden(lm, inside: BlockInside, layer: int, mid: torch.Tensor) -> torch.Tensor:
    """``[pos, d_mlp]``: the neurons' activations (the output projection's input) on ``mid`` ``[pos, d_model]``."""
    mlp_in = _part(lm, layer, inside.mlp_norm)(mid) if lm.arch.norm == "pre" else mid
    first, *gate = (_part(lm, layer, path)(mlp_in) for path in inside.mlp_in)
    hidden = _part(lm, layer, inside.activation)(first)
    return hidden * gate[0] if gate else hidden


def _check_rebuilt(cap: Capture, layer: int, positions: torch.Tensor, out: torch.Tensor) -> None:
    recorded = cap.resid[layer + 1, positions]  # [pos, d_model]
    error = float((out - recorded).abs().max())
    if error > 1e-3 * (1.0 + float(recorded.abs().max())):
        logger.warning("Block %d rebuilt from its parts is %.3g away from the recorded output", layer, error)
        raise OptLensError(
            f"Block {layer} rebuilt from the parts opt_lens knows does not give the output the model computed, "
            "so its insides cannot be shown faithfully."
        )


@dataclass(frozen=True)
class AttentionSteps:
    """How one head computes its output at one query position, step by step, with this run's numbers."""

    layer: int
    head: int
    query: int
    keys: torch.Tensor  # [key]: the token positions 0..query
    scores: torch.Tensor  # [key]: query . key, before scaling
    scaling: float  # what the scores are multiplied by (1 / sqrt(d_head) in most models)
    scaled: torch.Tensor  # [key]: scores * scaling
    mask: torch.Tensor  # [key]: what the mask adds (0 where the query may look, -inf where it may not)
    probs: torch.Tensor  # [key]: softmax(scaled + mask), the head's attention row
    values: torch.Tensor  # [key, d_head]: the value vector of each key
    weighted: torch.Tensor  # [key, d_head]: probs[:, None] * values
    output: torch.Tensor  # [d_model]: what the head adds to the residual stream (its slice of out_proj, no bias)


def attention_steps(lm, cap: Capture, layer: int, head: int, query: int) -> AttentionSteps:
    """The steps of head ``head`` of layer ``layer`` at position ``query``: scores, scaling, mask, softmax, the
    values weighted by it, and the head's output. Query and key states are the model's own (after rotary
    embeddings, grouped-query heads sharing their key and value states)."""
    if not 0 <= head < lm.arch.n_heads:
        raise OptLensError(f"There is no head {head}: this model has heads 0-{lm.arch.n_heads - 1}.")
    query = checked_position(query, cap.seq_len)
    inside = layer_inside(lm, cap, layer, [query])
    states = _layer_states(cap, layer)
    keys = torch.arange(query + 1)  # [key]
    kv_head = head // (lm.arch.n_heads // lm.arch.n_kv_heads)
    scores = states.key[kv_head, keys] @ states.query[head, query]  # [key]
    scaled = scores * states.scaling
    mask = _mask_row(states, head, query)
    probs = torch.softmax(scaled + mask, dim=-1)
    values = inside.values[kv_head, keys]  # [key, d_head]
    weighted = probs[:, None] * values
    return AttentionSteps(layer, head, query, keys, scores, states.scaling, scaled, mask, probs, values, weighted,
                          inside.heads_out[head, 0])


def _mask_row(states: LayerStates, head: int, query: int) -> torch.Tensor:
    """``[key]`` for keys 0..query: what the model's mask adds to the scaled scores (a sliding window may cut
    keys inside that range)."""
    if states.mask is None:
        return torch.zeros(query + 1)
    row = states.mask[min(head, states.mask.shape[0] - 1), query, : query + 1]
    if row.dtype == torch.bool:
        return torch.zeros(query + 1).masked_fill_(~row, float("-inf"))
    return row.float()


def frozen_readout(lm, cap: Capture, position: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A linear map of residual-stream parts ``[n, d_model] -> [n, vocab]``: the final norm with its scale
    frozen at its value at ``position`` in this run, then project_out and the unembedding, without biases."""
    require_pre_ln(lm.arch)
    arch, model = lm.arch, lm.model
    norm = get_module(model, arch.paths.final_norm) if arch.paths.final_norm else None
    project_out = get_module(model, arch.paths.project_out) if arch.paths.project_out else None
    unembed = get_module(model, arch.paths.unembed)
    scale, centred, weight, _ = norm_terms(norm, cap.resid[-1, position])

    def read(parts: torch.Tensor) -> torch.Tensor:
        if centred:
            parts = parts - parts.mean(-1, keepdim=True)
        x = parts * weight / scale
        if project_out is not None:
            x = x @ linear_map(project_out, x.shape[-1])
        return x @ unembed.weight.T  # [n, vocab]

    return read


def head_logits(lm, cap: Capture, layer: int, head: int, position: int = -1) -> torch.Tensor:
    """``[vocab]``: head ``head`` of layer ``layer``'s direct effect on every logit at ``position``, read as
    ``attribute`` reads it (so ``head_logits(...)[t] == attribute(lm, cap, t, position).heads[layer, head]``).
    Post-LN models are refused, as ``attribute`` refuses them."""
    require_pre_ln(lm.arch)
    if not 0 <= head < lm.arch.n_heads:
        raise OptLensError(f"There is no head {head}: this model has heads 0-{lm.arch.n_heads - 1}.")
    position = checked_position(position, cap.seq_len)
    inside = layer_inside(lm, cap, layer, [position])
    with exclusive(lm):
        return frozen_readout(lm, cap, position)(inside.heads_out[head])[0]  # [vocab]


def neurons(lm, cap: Capture, layer: int, position: int = -1) -> torch.Tensor:
    """``[d_mlp]``: the MLP neurons' activations after the nonlinearity (the input of ``c_proj`` / ``fc2`` /
    ``down_proj``) at ``position``."""
    return layer_inside(lm, cap, layer, [position]).hidden[0]


def neuron_logits(lm, cap: Capture, layer: int, neuron: int | Sequence[int], position: int = -1) -> torch.Tensor:
    """``[vocab]`` (``[neuron, vocab]`` for a list): a neuron's direct effect on every logit at ``position``, its
    activation times its row of the output projection, read through the frozen final norm and the unembedding.
    Summed over a layer's neurons, plus the output projection's bias read the same way, the effect on a token
    is ``attribute(...).mlps[layer]`` (which includes that bias). Post-LN models are refused."""
    require_pre_ln(lm.arch)
    position = checked_position(position, cap.seq_len)
    inside = layer_inside(lm, cap, layer, [position])
    chosen = torch.as_tensor(neuron, dtype=torch.long).reshape(-1)  # [neuron]
    if chosen.numel() == 0 or chosen.min() < 0 or chosen.max() >= inside.hidden.shape[-1]:
        raise OptLensError(f"Neurons are numbered 0-{inside.hidden.shape[-1] - 1} in this model's MLPs.")
    with exclusive(lm):
        written = inside.hidden[0, chosen, None] * inside.w_mlp[chosen]  # [neuron, d_model]
        logits = frozen_readout(lm, cap, position)(written)  # [neuron, vocab]
    return logits if isinstance(neuron, Sequence) else logits[0]


def neuron_activations(lm, cap: Capture, layer: int, neuron: int) -> torch.Tensor:
    """``[seq]``: one neuron's activation at every position of the prompt."""
    inside = layer_inside(lm, cap, layer, range(cap.seq_len))
    if not 0 <= neuron < inside.hidden.shape[-1]:
        raise OptLensError(f"Neurons are numbered 0-{inside.hidden.shape[-1] - 1} in this model's MLPs.")
    return inside.hidden[:, neuron]
