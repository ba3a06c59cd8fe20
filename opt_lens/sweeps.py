"""Which heads a prediction needs: knock each head out in turn and score the change (``head_effects``).

Sweeps never loop over full forward passes. A capture keeps, for every block, the hidden state it received
and the rest of its call (attention mask, rotary position embeddings, ...). A variant that changes block
``l`` shares the blocks before ``l`` and reruns only blocks ``l..L-1`` (``trace_blocks``), with the
variants of that layer in one batch (the recorded batch-of-one masks broadcast), then the model's own
readout at the one position that is scored. A sweep given a capture of the prompt reuses it: no forward
pass of the prompt runs again. Each batch is its own trace, so other students' runs get the model between
batches (first come, first served). Progress is reported after each batch and, so that a student who
leaves is stopped within a fraction of a second, after each block of one (``trace_blocks``' checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .capturing import Capture, capture_ids
from .errors import OptLensError
from .lens import checked_position
from .tokens import tokenize
from .tracing import readout, set_heads, trace_blocks

Progress = Callable[[int, int], None]
# Rows (variants x tokens) per batched rerun: big enough for efficient matrix products, small enough that
# a 128-token patching batch of GPT-2 size stays near 100 MB of activations.
ROWS_PER_BATCH = 2048


def sweep_capture(lm, source: Capture | str, length: int | None = None, points: tuple[str, ...] = ()) -> Capture:
    """The unablated capture a sweep starts from: ``source`` itself when it is one (taken on ``lm``, without
    ablation, of ``length`` tokens if given), else a capture of ``source``'s first ``length`` tokens keeping
    ``points`` (what the sweep reads of every layer, so that it is not rebuilt)."""
    if isinstance(source, Capture):
        source.loaded_model(lm)  # refuses a capture of another model
        ids = source.input_ids
        if source.ablation is None and (length is None or length == source.seq_len):
            return source
    else:
        ids = tokenize(lm.tokenizer, source, lm.arch.max_positions).input_ids  # as capture() tokenizes it
    return capture_ids(lm, ids if length is None else ids[:length], points=points)


def prompt_length(lm, source: Capture | str) -> int:
    if isinstance(source, Capture):
        return source.seq_len
    return tokenize(lm.tokenizer, source, lm.arch.max_positions).seq_len


def check_token(lm, token_id: int) -> int:
    if not 0 <= int(token_id) < lm.arch.vocab_size:
        raise OptLensError(f"Token id {token_id} is outside this model's vocabulary of {lm.arch.vocab_size}.")
    return int(token_id)


def head_sweep(lm, cap: Capture, values: Callable[[int], torch.Tensor], progress: Progress | None):
    """For each layer, batches with head ``h`` replaced in its own row (``values(layer)`` ``[head, seq,
    d_head]``); yields (layer, ``[head, vocab]`` logits at the last position). A batch holds at most
    ``ROWS_PER_BATCH`` rows of tokens, so a long prompt's sweep runs a few heads at a time instead of
    holding the activations of every head's variant at once."""
    arch = lm.arch
    per_batch = max(1, ROWS_PER_BATCH // cap.seq_len)
    total = arch.n_layers * arch.n_heads
    for layer in range(arch.n_layers):
        layer_values = values(layer)  # [head, seq, d_head]
        logits = []
        for start in range(0, arch.n_heads, per_batch):
            heads = range(start, min(start + per_batch, arch.n_heads))
            hidden = cap.resid[layer][None].expand(len(heads), -1, -1)  # [variant, seq, d_model]
            edit = set_heads(layer, heads, layer_values[start : heads.stop], per_row=True)
            logits.append(trace_blocks(lm, hidden, cap.block_calls, layer, edits=[edit], read=-1,
                                       checkpoint=between_blocks(progress, layer * arch.n_heads + start, total)
                                       ).logits)  # [variant, vocab]
            if progress is not None:
                progress(layer * arch.n_heads + heads.stop, total)
        yield layer, torch.cat(logits)  # [head, vocab]


def between_blocks(progress: Progress | None, done: int, total: int) -> Callable[[], None] | None:
    """A batch's checkpoint: ``progress`` again at the count so far, where a student who left is stopped
    (a batch of a thousand-token prompt runs for seconds; one block of it, a fraction of a second)."""
    return None if progress is None else lambda: progress(done, total)


def head_effects(
    lm, source: Capture | str, *, token_id: int | None = None, position: int = -1, progress: Progress | None = None
) -> torch.Tensor:
    """``[n_layers, n_heads]`` nats: the change in log-probability of ``token_id`` at ``position`` when each head
    alone is knocked out (zero ablation); negative = the model needs that head for this prediction.

    ``source`` is a capture taken on ``lm`` (reused as it is when ``position`` is its last token and it has no
    ablation; the effects are always those on the unablated run) or a prompt's text. ``token_id`` defaults to
    the model's own top prediction at ``position`` on the unablated run. The run is cut after ``position``
    (attention is causal, so later tokens cannot matter). ``progress(done, total)`` is called after each
    batch of heads, counting heads.
    """
    position = checked_position(position, prompt_length(lm, source))
    cap = sweep_capture(lm, source, position + 1)
    clean = torch.log_softmax(readout(lm, cap.resid[-1, -1]), -1)  # [vocab]
    token_id = int(clean.argmax()) if token_id is None else check_token(lm, token_id)
    arch = lm.arch
    zeros = torch.zeros(arch.n_heads, cap.seq_len, arch.d_head)  # [head, seq, d_head]
    effects = torch.empty(arch.n_layers, arch.n_heads)  # [layer, head]
    for layer, logits in head_sweep(lm, cap, lambda layer: zeros, progress):
        effects[layer] = torch.log_softmax(logits, -1)[:, token_id] - clean[token_id]
    return effects
