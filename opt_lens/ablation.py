"""Knock heads, MLP layers or MLP neurons out of one forward pass, with hooks that exist only while the pass runs.

A head is removed at the input of its attention output projection (GPT-2's ``c_proj``, OPT's
``out_proj``): that input is the concatenation of the heads' outputs, head ``h`` in the slice
``[h * d_head, (h + 1) * d_head)`` of its last dimension. An MLP layer is removed at its output (the
module whose output is added to the residual stream). A neuron is removed at the input of the MLP's output
projection (GPT-2's ``c_proj``, OPT's ``fc2``): its activation after the nonlinearity, entry ``n`` of that
input's last dimension. ``"zero"`` sets the removed part to zero; ``"mean"`` replaces it by its mean over the
prompt's positions in the unablated run (TransformerLens' mean ablation, with the prompt itself as the
reference set).

``ablation_edits`` turns an ``Ablation`` into edits of a ``trace`` (tracing.py), which owns the hooks and the lock,
so no other student's pass ever sees them.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass

import torch

from .errors import OptLensError
from .tracing import Edit, Point, set_heads, set_mlp, set_neuron, trace, zero_heads

ABLATION_MODES = ("zero", "mean")


@dataclass(frozen=True)
class Ablation:
    """What a run knocks out: heads as (layer, head), whole MLP layers, MLP neurons as (layer, neuron), and what
    replaces them."""

    heads: tuple[tuple[int, int], ...] = ()
    mlps: tuple[int, ...] = ()
    mode: str = "zero"
    neurons: tuple[tuple[int, int], ...] = ()


def ablation_spec(arch, heads=(), mlps=(), mode: str = "zero", neurons=()) -> Ablation | None:
    """Validate what a student asked to knock out; None when nothing is."""
    if mode not in ABLATION_MODES:
        raise OptLensError(f"Unknown ablation {mode!r}: use one of {', '.join(ABLATION_MODES)}.")
    checked_heads = _pairs(heads, "head", "H", arch.n_layers, arch.n_heads)
    checked_neurons = _pairs(neurons, "neuron", "N", arch.n_layers, arch.d_mlp)
    if checked_neurons and arch.paths.mlp_down is None:
        raise OptLensError("opt_lens does not know this model's MLP output projection, so it cannot knock a neuron out.")
    checked_mlps = []
    for item in mlps:
        try:
            layer = operator.index(item)
        except TypeError:
            raise OptLensError(f"An MLP layer is a number, not {item!r}.") from None
        if not 0 <= layer < arch.n_layers:
            raise OptLensError(f"There is no MLP layer {layer}: this model has layers 0-{arch.n_layers - 1}.")
        checked_mlps.append(layer)
    if not checked_heads and not checked_mlps and not checked_neurons:
        return None
    return Ablation(tuple(sorted(set(checked_heads))), tuple(sorted(set(checked_mlps))), mode,
                    tuple(sorted(set(checked_neurons))))


def _pairs(items, what: str, letter: str, n_layers: int, n_per_layer: int) -> list[tuple[int, int]]:
    """Checked (layer, index) pairs of heads or neurons."""
    checked = []
    for item in items:
        try:
            layer, index = (int(i) for i in item)
        except (TypeError, ValueError):
            raise OptLensError(f"A {what} is a (layer, {what}) pair of numbers, not {item!r}.") from None
        if not (0 <= layer < n_layers and 0 <= index < n_per_layer):
            raise OptLensError(
                f"There is no {what} L{layer}.{letter}{index}: this model has layers 0-{n_layers - 1} "
                f"and {what}s 0-{n_per_layer - 1}."
            )
        checked.append((layer, index))
    return checked


def head_slice(arch, head: int) -> slice:
    return slice(head * arch.d_head, (head + 1) * arch.d_head)


def ablation_edits(lm, input_ids: torch.Tensor, ablation: Ablation | None) -> list[Edit]:
    """The ablation as trace edits; mean ablation first runs the unablated pass (up to the last ablated
    layer) for its means."""
    if ablation is None:
        return []
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in ablation.heads:
        by_layer[layer].append(head)
    neuron_layers = {layer for layer, _ in ablation.neurons}
    if ablation.mode == "zero":
        return ([zero_heads(layer, heads) for layer, heads in by_layer.items()]
                + [set_mlp(layer, 0.0) for layer in ablation.mlps]
                + [set_neuron(layer, neuron) for layer, neuron in ablation.neurons])
    means = _means(lm, input_ids, by_layer, ablation.mlps, neuron_layers)
    edits = [
        set_heads(layer, heads, means[Point("z", layer)][heads]) for layer, heads in by_layer.items()
    ]  # each head's [d_head] mean goes to every position
    edits += [set_neuron(layer, neuron, means[Point("mlp_hidden", layer)][neuron]) for layer, neuron in ablation.neurons]
    return edits + [set_mlp(layer, means[Point("mlp_out", layer)]) for layer in ablation.mlps]


def _means(lm, input_ids: torch.Tensor, head_layers, mlp_layers, neuron_layers=()) -> dict[Point, torch.Tensor]:
    """Per ablated layer, the mean over positions of the heads' outputs (``[head, d_head]``), of the MLP's
    neurons (``[d_mlp]``) and of its output (``[d_model]``) in the unablated run, which stops after the last
    layer needed."""
    points = [Point("z", layer) for layer in head_layers] + [Point("mlp_out", layer) for layer in mlp_layers]
    points += [Point("mlp_hidden", layer) for layer in neuron_layers]
    last = max(point.layer for point in points)
    run = trace(lm, input_ids, record=points, stop=Point("resid_post", last))
    means = {}
    for point in points:
        value = run[point]  # [1, seq, head, d_head] or [1, seq, d_model]
        flat = value.reshape(-1, value.shape[2:].numel()).mean(0)  # averaged over every leading dim, as the module saw it
        means[point] = flat.view(value.shape[2:])
    return means
