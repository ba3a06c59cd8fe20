"""Knock heads or MLP layers out of one forward pass, with hooks that exist only while the pass runs.

A head is removed at the input of its attention output projection (GPT-2's ``c_proj``, OPT's
``out_proj``): that input is the concatenation of the heads' outputs, head ``h`` in the slice
``[h * d_head, (h + 1) * d_head)`` of its last dimension. An MLP layer is removed at its output (the
module whose output is added to the residual stream). ``"zero"`` sets the removed part to zero; ``"mean"``
replaces it by its mean over the prompt's positions in the unablated run (TransformerLens' mean ablation,
with the prompt itself as the reference set).

``install_ablation`` is called by ``capture_ids`` with the model's lock held, inside its ``hooks()`` block, so the
hooks are removed whatever happens and no other student's pass ever sees them.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass

import torch

from .errors import OptLensError
from .surgery import StopForward, get_module, hooks

ABLATION_MODES = ("zero", "mean")


@dataclass(frozen=True)
class Ablation:
    """What a run knocks out: heads as (layer, head), whole MLP layers, and what replaces them."""

    heads: tuple[tuple[int, int], ...] = ()
    mlps: tuple[int, ...] = ()
    mode: str = "zero"


def ablation_spec(arch, heads=(), mlps=(), mode: str = "zero") -> Ablation | None:
    """Validate what a student asked to knock out; None when nothing is."""
    if mode not in ABLATION_MODES:
        raise OptLensError(f"Unknown ablation {mode!r}: use one of {', '.join(ABLATION_MODES)}.")
    checked_heads = []
    for item in heads:
        try:
            layer, head = (int(i) for i in item)
        except (TypeError, ValueError):
            raise OptLensError(f"A head is a (layer, head) pair of numbers, not {item!r}.") from None
        if not (0 <= layer < arch.n_layers and 0 <= head < arch.n_heads):
            raise OptLensError(
                f"There is no head L{layer}.H{head}: this model has layers 0-{arch.n_layers - 1} "
                f"and heads 0-{arch.n_heads - 1}."
            )
        checked_heads.append((layer, head))
    checked_mlps = []
    for item in mlps:
        try:
            layer = operator.index(item)
        except TypeError:
            raise OptLensError(f"An MLP layer is a number, not {item!r}.") from None
        if not 0 <= layer < arch.n_layers:
            raise OptLensError(f"There is no MLP layer {layer}: this model has layers 0-{arch.n_layers - 1}.")
        checked_mlps.append(layer)
    if not checked_heads and not checked_mlps:
        return None
    return Ablation(tuple(sorted(set(checked_heads))), tuple(sorted(set(checked_mlps))), mode)


def head_slice(arch, head: int) -> slice:
    return slice(head * arch.d_head, (head + 1) * arch.d_head)


def install_ablation(lm, hook_set, input_ids: torch.Tensor, ablation: Ablation | None) -> None:
    """Register the ablation's hooks in ``hook_set``. Call with ``lm.lock`` held and before any recording
    hooks, so that they see the ablated values. Mean ablation first runs the unablated pass for its means."""
    if ablation is None:
        return
    arch, model = lm.arch, lm.model
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in ablation.heads:
        by_layer[layer].append(head)
    head_means, mlp_means = _means(lm, input_ids, ablation) if ablation.mode == "mean" else ({}, {})

    def remove_heads(layer: int):
        def hook(module, args, kwargs):
            z = args[0].clone()  # [..., n_heads * d_head]: the heads' outputs side by side
            for head in by_layer[layer]:
                part = head_slice(arch, head)
                z[..., part] = head_means[layer][part] if head_means else 0.0
            return (z, *args[1:]), kwargs

        return hook

    def remove_mlp(layer: int):
        def hook(module, args, output):
            return mlp_means[layer].expand_as(output).clone() if mlp_means else torch.zeros_like(output)

        return hook

    for layer in by_layer:
        hook_set.forward_pre(get_module(model, arch.paths.attn_out_proj_of(layer)), remove_heads(layer))
    for layer in ablation.mlps:
        hook_set.forward(get_module(model, arch.paths.mlp_out_of(layer)), remove_mlp(layer))


def _means(lm, input_ids: torch.Tensor, ablation: Ablation) -> tuple[dict, dict]:
    """Per ablated layer, the mean over positions of the output-projection input and of the MLP output in
    the unablated run (batch of one; OPT's ``fc2`` sees ``[seq, d]``, so every leading dim is averaged)."""
    arch, model = lm.arch, lm.model
    head_means: dict[int, torch.Tensor] = {}  # layer -> [n_heads * d_head]
    mlp_means: dict[int, torch.Tensor] = {}  # layer -> [d_model]

    def keep_head_mean(layer):
        def hook(module, args, kwargs):
            head_means[layer] = args[0].reshape(-1, args[0].shape[-1]).mean(0)

        return hook

    def keep_mlp_mean(layer):
        def hook(module, args, output):
            mlp_means[layer] = output.reshape(-1, output.shape[-1]).mean(0)

        return hook

    def stop(module, args, output):
        raise StopForward

    with torch.inference_mode(), hooks() as hook_set:
        for layer in {layer for layer, _ in ablation.heads}:
            hook_set.forward_pre(get_module(model, arch.paths.attn_out_proj_of(layer)), keep_head_mean(layer))
        for layer in ablation.mlps:
            hook_set.forward(get_module(model, arch.paths.mlp_out_of(layer)), keep_mlp_mean(layer))
        last = max([layer for layer, _ in ablation.heads] + list(ablation.mlps))
        hook_set.forward(get_module(model, arch.paths.block(last)), stop)  # later blocks are not needed
        try:
            model(input_ids=input_ids[None], use_cache=False)
        except StopForward:
            pass
    return head_means, mlp_means
