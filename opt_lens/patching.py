"""Which activations restore a behaviour: activation patching of the residual stream and of each head.

Conventions follow TransformerLens and the indirect-object-identification literature: patching is
normalised so that 1 is the clean behaviour and 0 the corrupted one. Both runs are captures (given, or
taken from the prompts' text); each variant reruns only the blocks after the patched one (sweeps.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .capturing import Capture
from .errors import OptLensError
from . import sweeps
from .sweeps import Progress, check_token, head_sweep, sweep_capture
from .tracing import readout, trace_blocks


@dataclass(frozen=True)
class _Pair:
    clean: Capture
    corrupted: Capture
    clean_diff: float
    corrupted_diff: float
    answer_id: int
    wrong_id: int

    def restored(self, diffs: torch.Tensor) -> torch.Tensor:
        return (diffs - self.corrupted_diff) / (self.clean_diff - self.corrupted_diff)

    def diffs(self, logits: torch.Tensor) -> torch.Tensor:
        """``[batch]`` logit(answer) - logit(wrong) from ``[batch, vocab]`` logits."""
        return logits[:, self.answer_id] - logits[:, self.wrong_id]


def _pair(lm, clean: Capture | str, corrupted: Capture | str, answer_id: int, wrong_id: int, points=()) -> _Pair:
    clean, corrupted = sweep_capture(lm, clean, points=points), sweep_capture(lm, corrupted)
    if clean.seq_len != corrupted.seq_len:
        raise OptLensError(
            f"The two prompts must have the same number of tokens to patch one into the other: the clean prompt "
            f"has {clean.seq_len} and the corrupted prompt {corrupted.seq_len}."
        )
    answer_id, wrong_id = check_token(lm, answer_id), check_token(lm, wrong_id)
    both = torch.stack([clean.resid[-1, -1], corrupted.resid[-1, -1]])  # [2, d_model]
    logits = readout(lm, both)  # [2, vocab]
    clean_diff, corrupted_diff = (logits[:, answer_id] - logits[:, wrong_id]).tolist()
    if clean_diff == corrupted_diff:
        raise OptLensError(
            f"Both prompts give the same logit difference ({clean_diff:.3f}) between the answer and the wrong "
            "token, so there is no effect to restore: pick prompts that the model answers differently."
        )
    return _Pair(clean, corrupted, clean_diff, corrupted_diff, answer_id, wrong_id)


def patch_resid(
    lm, clean: Capture | str, corrupted: Capture | str, *, answer_id: int, wrong_id: int, progress: Progress | None = None
) -> torch.Tensor:
    """``[n_layers + 1, seq]`` activation patching of the residual stream (rows as ``Capture.resid``: row 0 the
    embeddings, row i after block i). Cell (l, p) runs the corrupted prompt with the residual stream at
    layer l, position p replaced by the clean run's, and gives
    ``(logit diff - corrupted logit diff) / (clean logit diff - corrupted logit diff)`` with
    logit diff = logit(answer) - logit(wrong) at the last position: 1 restores the clean behaviour, 0 changes
    nothing. ``clean`` and ``corrupted`` are captures taken on ``lm`` or prompts' text (an ablated capture's
    prompt is run again without its ablation). ``progress(done, total)`` counts cells.
    """
    pair = _pair(lm, clean, corrupted, answer_id, wrong_id)
    arch = lm.arch
    seq = pair.clean.seq_len
    result = torch.empty(arch.n_layers + 1, seq)  # [layer + 1, position]
    # After the last block only the last position reaches the readout, which works position by position.
    result[arch.n_layers] = 0.0
    result[arch.n_layers, -1] = 1.0
    chunk = max(1, sweeps.ROWS_PER_BATCH // seq)
    total, done = (arch.n_layers + 1) * seq, seq
    for layer in range(arch.n_layers):
        clean_layer = pair.clean.resid[layer]  # [seq, d_model]: block layer's input
        for start in range(0, seq, chunk):
            positions = torch.arange(start, min(start + chunk, seq))
            hidden = pair.corrupted.resid[layer][None].repeat(len(positions), 1, 1)  # [variant, seq, d_model]
            hidden[torch.arange(len(positions)), positions] = clean_layer[positions]
            run = trace_blocks(lm, hidden, pair.corrupted.block_calls, layer, read=-1,
                               checkpoint=sweeps.between_blocks(progress, done, total))
            result[layer, positions] = pair.restored(pair.diffs(run.logits))
            done += len(positions)
            if progress is not None:
                progress(done, total)
    return result


def patch_heads(
    lm, clean: Capture | str, corrupted: Capture | str, *, answer_id: int, wrong_id: int, progress: Progress | None = None
) -> torch.Tensor:
    """``[n_layers, n_heads]``: like ``patch_resid`` with each head's output (its slice of the output
    projection's input, at every position) patched from the clean run into the corrupted one."""
    pair = _pair(lm, clean, corrupted, answer_id, wrong_id, points=("z",))  # a prompt's text: heads kept as captured

    def clean_heads(layer: int) -> torch.Tensor:
        return pair.clean.point("z", layer).transpose(0, 1)  # [head, seq, d_head]

    result = torch.empty(lm.arch.n_layers, lm.arch.n_heads)  # [layer, head]
    for layer, logits in head_sweep(lm, pair.corrupted, clean_heads, progress):
        result[layer] = pair.restored(pair.diffs(logits))
    return result
