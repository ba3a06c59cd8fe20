"""Read the residual stream through the model's own output head: next-token predictions and the logit lens.

The readout is the chain of modules the model itself applies after its last block (final norm if any,
OPT-350m's ``project_out`` 1024 -> 512, the unembedding), so layer L of the lens equals the model's logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .capturing import Capture
from .errors import OptLensError
from .tokens import display_tokens
from .tracing import readout

__all__ = ["readout"]  # the model's own output head on any residual stream (a trace, tracing.py)

# Positions per readout call: bounds the [positions, vocab] block to ~50 MB for a 50k vocabulary.
_POSITION_CHUNK = 256


def logit_lens(lm, capture: Capture, position: int) -> torch.Tensor:
    """``[n_layers + 1, vocab]``: row 0 read from the embeddings, row i after block i, the last row the model's logits."""
    lm = capture.loaded_model(lm)
    return readout(lm, capture.resid[:, checked_position(position, capture.seq_len)])  # [layer + 1, vocab]


def checked_position(position: int, seq_len: int) -> int:
    """``position`` counted from the start (a negative one counts from the end, as in Python)."""
    if not -seq_len <= position < seq_len:
        raise OptLensError(f"Position {position} is outside this prompt's tokens 0..{seq_len - 1}.")
    return position % seq_len


@dataclass(frozen=True)
class Prediction:
    rank: int
    token: str
    token_id: int
    probability: float
    logit: float


def top_k_next(lm, capture: Capture, k: int = 10, position: int = -1) -> list[Prediction]:
    """The k most likely next tokens after ``position`` (default: after the whole prompt)."""
    lm = capture.loaded_model(lm)
    position = checked_position(position, capture.seq_len)
    if position == capture.seq_len - 1:
        logits = capture.next_logits  # the model's own output, no recomputation
    else:
        logits = readout(lm, capture.resid[-1, position])  # [vocab]
    probs = torch.softmax(logits.float(), dim=-1)  # [vocab]
    top = torch.topk(probs, k=min(k, probs.shape[0]))
    ids = top.indices.tolist()
    return [
        Prediction(rank=i + 1, token=token, token_id=token_id, probability=p, logit=logits[token_id].item())
        for i, (token, token_id, p) in enumerate(zip(display_tokens(lm.tokenizer, ids), ids, top.values.tolist()))
    ]


@dataclass(frozen=True)
class LensMap:
    """Each layer's top guess at each position; never the full ``[layer, seq, vocab]`` tensor."""

    positions: list[int]
    top_ids: torch.Tensor  # [layer + 1, position]
    top_probs: torch.Tensor  # [layer + 1, position]
    top_tokens: list[list[str]]  # [layer + 1][position]
    # Probability each layer gives to the token the model finally predicts at that position.
    final_token_probs: torch.Tensor  # [layer + 1, position]

    def settled_layer(self) -> list[int]:
        """Per position, the first layer from which the top guess stays equal to the final prediction."""
        agrees = self.top_ids == self.top_ids[-1]  # [layer + 1, position]
        n_rows = agrees.shape[0]
        settled = []
        for column in agrees.T.tolist():
            layer = n_rows - 1
            while layer > 0 and column[layer - 1]:
                layer -= 1
            settled.append(layer)
        return settled


def logit_lens_map(lm, capture: Capture, positions: list[int] | None = None, *, lens=None) -> LensMap:
    """Each layer's top guess at ``positions``; with a ``TunedLens`` (tuned.py), read through its translators."""
    lm = capture.loaded_model(lm)
    positions = list(range(capture.seq_len)) if positions is None else [checked_position(p, capture.seq_len) for p in positions]
    n_rows = capture.resid.shape[0]
    top_ids = torch.empty(n_rows, len(positions), dtype=torch.long)
    top_probs = torch.empty(n_rows, len(positions))
    final_token_probs = torch.empty(n_rows, len(positions))
    for start in range(0, len(positions), _POSITION_CHUNK):
        chunk = positions[start : start + _POSITION_CHUNK]
        columns = slice(start, start + len(chunk))
        final_ids = None
        for layer in reversed(range(n_rows)):  # last layer first: it defines the final prediction
            rows = capture.resid[layer, chunk]  # [position, d_model]
            rows = rows if lens is None else lens.translate(layer, rows)
            probs = torch.softmax(readout(lm, rows).float(), dim=-1)  # [position, vocab]
            best = probs.max(dim=-1)
            if final_ids is None:
                final_ids = best.indices
            top_ids[layer, columns], top_probs[layer, columns] = best.indices, best.values
            final_token_probs[layer, columns] = probs.gather(-1, final_ids[:, None])[:, 0]
    return LensMap(
        positions=positions,
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=[display_tokens(lm.tokenizer, row) for row in top_ids.tolist()],
        final_token_probs=final_token_probs,
    )


def token_losses(capture: Capture) -> torch.Tensor:
    """``[seq - 1]`` nats: the loss of predicting token t + 1 from tokens 0..t, for each t.

    Read in blocks of positions: never the whole ``[seq, vocab]`` logits and a log-softmax copy of them.
    """
    lm = capture.loaded_model()
    n = capture.seq_len - 1
    losses = torch.empty(n)  # [seq - 1]
    for start in range(0, n, _POSITION_CHUNK):
        stop = min(start + _POSITION_CHUNK, n)
        log_probs = torch.log_softmax(readout(lm, capture.resid[-1, start:stop]).float(), dim=-1)  # [block, vocab]
        losses[start:stop] = -log_probs.gather(-1, capture.input_ids[start + 1 : stop + 1, None])[:, 0]
    return losses
