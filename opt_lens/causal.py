"""Cause and effect: which heads a prediction needs, which activations restore it, who writes the logit.

Sweeps (``head_effects``, ``patch_resid``, ``patch_heads``) never loop over full forward passes. One
recorded run keeps, for every block, the hidden state it received and the other arguments the model gave
it (attention mask, rotary position embeddings, ...). A variant that changes block ``l`` shares the blocks
before ``l`` and reruns only blocks ``l..L-1``, with all variants of that layer in one batch (the recorded
batch-of-one masks broadcast), then the model's own readout modules at the one position that is scored.

Conventions follow TransformerLens and the indirect-object-identification literature: patching is
normalised so that 1 is the clean behaviour and 0 the corrupted one; direct logit attribution reads each
component through the final norm with its scale frozen at the run's value.

Every pass on the shared model holds ``lm.lock``, taken once per batch so other students' captures run in
between; hooks live only inside ``hooks()`` blocks under the lock, and progress is reported outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .ablation import head_slice, install_ablation
from .blocks import BlockCall, block_output
from .capturing import Capture
from .errors import OptLensError
from .lens import checked_position, readout_holding_lock
from .surgery import StopForward, get_module, hooks
from .tokens import tokenize

Progress = Callable[[int, int], None]
# Rows (variants x tokens) per batched rerun: big enough for efficient matrix products, small enough that
# a 128-token patching batch of GPT-2 size stays near 100 MB of activations.
_ROWS_PER_BATCH = 2048


@dataclass
class _Recorded:
    """One run, block by block: enough to rerun any suffix of blocks on a batch of changed hidden states."""

    inputs: list[torch.Tensor]  # per block, its input hidden state [1, seq, d_model]
    calls: list[BlockCall]  # per block, the rest of its call (mask, position embeddings, ...)
    final: torch.Tensor  # [1, seq, d_model]: the last block's output
    head_inputs: list[torch.Tensor] | None  # per layer, the output projection's input [seq, n_heads * d_head]


def _record(lm, input_ids: torch.Tensor, *, head_inputs: bool = False) -> _Recorded:
    """Run ``input_ids`` once (call with ``lm.lock`` held) and record every block's call."""
    arch, model = lm.arch, lm.model
    inputs, calls, final, heads = [], [], [], []

    def before_block(module, args, kwargs):
        hidden, call = BlockCall.split(args, kwargs)
        inputs.append(hidden)
        calls.append(call)

    def before_out_proj(module, args, kwargs):
        heads.append(args[0].reshape(-1, args[0].shape[-1]))  # [seq, n_heads * d_head]

    def after_last(module, args, output):
        final.append(block_output(output))
        raise StopForward  # the readout is applied where it is needed, to the scored position only

    with torch.inference_mode(), hooks() as hook_set:
        for layer in range(arch.n_layers):
            hook_set.forward_pre(get_module(model, arch.paths.block(layer)), before_block)
            if head_inputs:
                hook_set.forward_pre(get_module(model, arch.paths.attn_out_proj_of(layer)), before_out_proj)
        hook_set.forward(get_module(model, arch.paths.block(arch.n_layers - 1)), after_last)
        try:
            model(input_ids=input_ids[None], use_cache=False)
        except StopForward:
            pass
    assert len(inputs) == arch.n_layers and len(final) == 1, "a block was not called exactly once"
    return _Recorded(inputs, calls, final[0], heads if head_inputs else None)


def _run_blocks(lm, recorded: _Recorded, start: int, hidden: torch.Tensor) -> torch.Tensor:
    """Blocks ``start..L-1`` on ``hidden`` ``[batch, seq, d_model]`` with the recorded arguments."""
    for layer in range(start, lm.arch.n_layers):
        hidden = recorded.calls[layer].run(get_module(lm.model, lm.arch.paths.block(layer)), hidden)
    return hidden  # [batch, seq, d_model]


def _replace_heads(lm, heads: range, values: torch.Tensor):
    """A pre-hook for an output projection: batch row ``i`` gets ``values[i]`` ``[seq, d_head]`` in the slice of
    head ``heads[i]`` (zeros knock the head out; another run's slice patches it in)."""
    arch = lm.arch

    def hook(module, args, kwargs):
        z = args[0].clone()
        rows = z.reshape(len(heads), -1, z.shape[-1])  # [variant, seq, n_heads * d_head], a view of z
        for row, head in enumerate(heads):
            rows[row, :, head_slice(arch, head)] = values[row]
        return (z, *args[1:]), kwargs

    return hook


def _head_sweep(lm, recorded: _Recorded, values: Callable[[int], torch.Tensor], progress):
    """For each layer, batches with head ``h`` replaced in its own row (``values(layer)`` ``[head, seq,
    d_head]``); yields (layer, ``[head, vocab]`` logits at the last position). A batch holds at most
    ``_ROWS_PER_BATCH`` rows of tokens, so a long prompt's sweep runs a few heads at a time instead of
    holding the activations of every head's variant at once (and other students' runs get the lock between)."""
    arch = lm.arch
    seq = recorded.final.shape[1]
    per_batch = max(1, _ROWS_PER_BATCH // seq)
    for layer in range(arch.n_layers):
        layer_values = values(layer)  # [head, seq, d_head]
        out_proj = get_module(lm.model, arch.paths.attn_out_proj_of(layer))
        logits = []
        for start in range(0, arch.n_heads, per_batch):
            heads = range(start, min(start + per_batch, arch.n_heads))
            hidden = recorded.inputs[layer].expand(len(heads), -1, -1)  # [variant, seq, d_model]
            with lm.lock, torch.inference_mode(), hooks() as hook_set:
                hook_set.forward_pre(out_proj, _replace_heads(lm, heads, layer_values[start : heads.stop]))
                logits.append(readout_holding_lock(lm, _run_blocks(lm, recorded, layer, hidden)[:, -1]))  # [variant, vocab]
        yield layer, torch.cat(logits)  # [head, vocab]
        if progress is not None:
            progress((layer + 1) * arch.n_heads, arch.n_layers * arch.n_heads)


def _prompt_ids(lm, text: str) -> torch.Tensor:
    """``[seq]``: the prompt as capture() tokenizes it (an empty prompt is refused there)."""
    return tokenize(lm.tokenizer, text, lm.arch.max_positions).input_ids


def _check_token(lm, token_id: int) -> int:
    if not 0 <= int(token_id) < lm.arch.vocab_size:
        raise OptLensError(f"Token id {token_id} is outside this model's vocabulary of {lm.arch.vocab_size}.")
    return int(token_id)


def head_effects(
    lm, text: str, *, token_id: int | None = None, position: int = -1, progress: Progress | None = None
) -> torch.Tensor:
    """``[n_layers, n_heads]`` nats: the change in log-probability of ``token_id`` at ``position`` when each head
    alone is knocked out (zero ablation); negative = the model needs that head for this prediction.

    ``token_id`` defaults to the model's own top prediction at ``position`` on the unablated run. The run is
    cut after ``position`` (attention is causal, so later tokens cannot matter). ``progress(done, total)``
    is called after each layer, counting heads.
    """
    ids = _prompt_ids(lm, text)
    position = checked_position(position, len(ids))
    ids = ids[: position + 1]
    with lm.lock:
        recorded = _record(lm, ids)
        with torch.inference_mode():
            clean = torch.log_softmax(readout_holding_lock(lm, recorded.final[0, -1]), -1)  # [vocab]
    token_id = int(clean.argmax()) if token_id is None else _check_token(lm, token_id)
    arch = lm.arch
    zeros = torch.zeros(arch.n_heads, len(ids), arch.d_head)  # [head, seq, d_head]
    effects = torch.empty(arch.n_layers, arch.n_heads)  # [layer, head]
    for layer, logits in _head_sweep(lm, recorded, lambda layer: zeros, progress):
        effects[layer] = torch.log_softmax(logits, -1)[:, token_id] - clean[token_id]
    return effects


def _logit_diff(lm, final_last: torch.Tensor, answer_id: int, wrong_id: int) -> torch.Tensor:
    """``[batch]`` logit(answer) - logit(wrong) from last-position hidden states ``[batch, d_model]``."""
    logits = readout_holding_lock(lm, final_last)  # [batch, vocab]
    return logits[:, answer_id] - logits[:, wrong_id]


@dataclass(frozen=True)
class _Pair:
    clean: _Recorded
    corrupted: _Recorded
    clean_diff: float
    corrupted_diff: float
    answer_id: int
    wrong_id: int

    def restored(self, diffs: torch.Tensor) -> torch.Tensor:
        return (diffs - self.corrupted_diff) / (self.clean_diff - self.corrupted_diff)


def _pair(lm, clean_text: str, corrupted_text: str, answer_id: int, wrong_id: int, *, head_inputs: bool) -> _Pair:
    clean_ids, corrupted_ids = _prompt_ids(lm, clean_text), _prompt_ids(lm, corrupted_text)
    if len(clean_ids) != len(corrupted_ids):
        raise OptLensError(
            f"The two prompts must have the same number of tokens to patch one into the other: the clean prompt "
            f"has {len(clean_ids)} and the corrupted prompt {len(corrupted_ids)}."
        )
    answer_id, wrong_id = _check_token(lm, answer_id), _check_token(lm, wrong_id)
    with lm.lock:
        clean = _record(lm, clean_ids, head_inputs=head_inputs)
        corrupted = _record(lm, corrupted_ids)
        with torch.inference_mode():
            both = torch.cat([clean.final[:, -1], corrupted.final[:, -1]])  # [2, d_model]
            clean_diff, corrupted_diff = _logit_diff(lm, both, answer_id, wrong_id).tolist()
    if clean_diff == corrupted_diff:
        raise OptLensError(
            f"Both prompts give the same logit difference ({clean_diff:.3f}) between the answer and the wrong "
            "token, so there is no effect to restore: pick prompts that the model answers differently."
        )
    return _Pair(clean, corrupted, clean_diff, corrupted_diff, answer_id, wrong_id)


def patch_resid(
    lm, clean_text: str, corrupted_text: str, *, answer_id: int, wrong_id: int, progress: Progress | None = None
) -> torch.Tensor:
    """``[n_layers + 1, seq]`` activation patching of the residual stream (rows as ``Capture.resid``: row 0 the
    embeddings, row i after block i). Cell (l, p) runs the corrupted prompt with the residual stream at
    layer l, position p replaced by the clean run's, and gives
    ``(logit diff - corrupted logit diff) / (clean logit diff - corrupted logit diff)`` with
    logit diff = logit(answer) - logit(wrong) at the last position: 1 restores the clean behaviour, 0 changes
    nothing. ``progress(done, total)`` counts cells.
    """
    pair = _pair(lm, clean_text, corrupted_text, answer_id, wrong_id, head_inputs=False)
    arch = lm.arch
    seq = pair.clean.final.shape[1]
    result = torch.empty(arch.n_layers + 1, seq)  # [layer + 1, position]
    # After the last block only the last position reaches the readout, which works position by position.
    result[arch.n_layers] = 0.0
    result[arch.n_layers, -1] = 1.0
    chunk = max(1, _ROWS_PER_BATCH // seq)
    total, done = (arch.n_layers + 1) * seq, seq
    for layer in range(arch.n_layers):
        clean_layer = pair.clean.inputs[layer][0]  # [seq, d_model]
        for start in range(0, seq, chunk):
            positions = torch.arange(start, min(start + chunk, seq))
            hidden = pair.corrupted.inputs[layer].repeat(len(positions), 1, 1)  # [variant, seq, d_model]
            hidden[torch.arange(len(positions)), positions] = clean_layer[positions]
            with lm.lock, torch.inference_mode():
                final = _run_blocks(lm, pair.corrupted, layer, hidden)[:, -1]  # [variant, d_model]
                result[layer, positions] = pair.restored(_logit_diff(lm, final, pair.answer_id, pair.wrong_id))
            done += len(positions)
            if progress is not None:
                progress(done, total)
    return result


def patch_heads(
    lm, clean_text: str, corrupted_text: str, *, answer_id: int, wrong_id: int, progress: Progress | None = None
) -> torch.Tensor:
    """``[n_layers, n_heads]``: like ``patch_resid`` with each head's output (its slice of the output
    projection's input, at every position) patched from the clean run into the corrupted one."""
    pair = _pair(lm, clean_text, corrupted_text, answer_id, wrong_id, head_inputs=True)
    arch = lm.arch

    def clean_heads(layer: int) -> torch.Tensor:
        z = pair.clean.head_inputs[layer]  # [seq, n_heads * d_head]
        return z.reshape(z.shape[0], arch.n_heads, arch.d_head).transpose(0, 1)  # [head, seq, d_head]

    result = torch.empty(arch.n_layers, arch.n_heads)  # [layer, head]
    with torch.inference_mode():
        for layer, logits in _head_sweep(lm, pair.corrupted, clean_heads, progress):
            result[layer] = pair.restored(logits[:, pair.answer_id] - logits[:, pair.wrong_id])
    return result


def token_losses(capture: Capture) -> torch.Tensor:
    """``[seq - 1]`` nats: the loss of predicting token t + 1 from tokens 0..t, for each t."""
    log_probs = torch.log_softmax(capture.logits[:-1].float(), dim=-1)  # [seq - 1, vocab]
    return -log_probs.gather(-1, capture.input_ids[1:, None])[:, 0]


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
    arch = lm.arch
    require_pre_ln(arch)
    position = checked_position(position, capture.seq_len)
    token_id = _check_token(lm, token_id)
    logit = float(capture.logits[position, token_id])
    parts = _parts(lm, capture, position)  # [component, d_model]: embed, heads, attn biases, MLPs
    if not _parts_add_up(parts):
        raise OptLensError(
            "Direct logit attribution needs blocks that add their attention and MLP outputs to the residual "
            "stream as they are: this model's blocks change them first (a norm after attention or the MLP), so "
            "the parts do not add up to the logit."
        )
    with lm.lock, torch.inference_mode():
        read, constant = _frozen_readout(lm, parts["final"], token_id)
        n_heads = arch.n_layers * arch.n_heads
        through = read(torch.cat([parts["embed"][None], parts["heads"], parts["attn_bias"], parts["mlps"]]))
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
    arch, model = lm.arch, lm.model
    z, mlps, ends = [], [], {}

    def before_first(module, args, kwargs):
        ends["embed"] = (args[0] if args else kwargs["hidden_states"])[0, position]

    def before_out_proj(module, args, kwargs):
        z.append(args[0].reshape(-1, args[0].shape[-1])[position])  # [n_heads * d_head]

    def after_mlp(module, args, output):
        mlps.append(output.reshape(-1, output.shape[-1])[position])  # [d_model] (OPT's fc2 sees [seq, d])

    def after_last(module, args, output):
        ends["final"] = block_output(output)[0, position]
        raise StopForward

    with lm.lock, torch.inference_mode():
        with hooks() as hook_set:
            install_ablation(lm, hook_set, capture.input_ids, capture.ablation)  # first: recorders see the ablated run
            hook_set.forward_pre(get_module(model, arch.paths.block(0)), before_first)
            for layer in range(arch.n_layers):
                hook_set.forward_pre(get_module(model, arch.paths.attn_out_proj_of(layer)), before_out_proj)
                hook_set.forward(get_module(model, arch.paths.mlp_out_of(layer)), after_mlp)
            hook_set.forward(get_module(model, arch.paths.block(arch.n_layers - 1)), after_last)
            try:
                model(input_ids=capture.input_ids[None], use_cache=False)
            except StopForward:
                pass
        heads, biases = [], []
        for layer in range(arch.n_layers):
            out_proj = get_module(model, arch.paths.attn_out_proj_of(layer))
            alone = torch.zeros(arch.n_heads + 1, z[layer].shape[0])  # row h: head h's slice only; last row: none
            for head in range(arch.n_heads):
                alone[head, head_slice(arch, head)] = z[layer][head_slice(arch, head)]
            out = out_proj(alone)  # [head + 1, d_model]
            heads.append(out[:-1] - out[-1])
            biases.append(out[-1])
    return {
        "embed": ends["embed"],
        "heads": torch.cat(heads),  # [layer * head, d_model]
        "attn_bias": torch.stack(biases),  # [layer, d_model]
        "mlps": torch.stack(mlps),  # [layer, d_model]
        "final": ends["final"],
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
    scale, centred, weight, bias = _norm_terms(norm, final)

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


def _norm_terms(norm: nn.Module | None, x: torch.Tensor) -> tuple[torch.Tensor, bool, torch.Tensor, torch.Tensor]:
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
