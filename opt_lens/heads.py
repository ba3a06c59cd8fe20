"""Head scores: which heads look at the previous token, copy via induction, rest on the first token.

Pure functions on attention patterns ``[layer, head, query, key]`` (rows sum to one, causal), plus
``head_scores`` which also runs the model once on repeated random tokens for the induction score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .capturing import Capture, capture_ids


def _from_second_query(attention: torch.Tensor) -> torch.Tensor:
    assert attention.dim() == 4, f"expected [layer, head, query, key], got {tuple(attention.shape)}"
    assert attention.shape[-1] >= 2, "scores need at least two tokens"
    return attention[:, :, 1:]  # query 0 can only attend to itself


# Long prompts store attention as float16; every score slices before converting, or works one layer at
# a time, so scoring a 1024-token GPT-2 capture never makes a 600 MB float32 copy of it.


def previous_token_scores(attention: torch.Tensor) -> torch.Tensor:
    """``[layer, head]``: mean attention from each token (after the first) to the token just before it."""
    _from_second_query(attention)  # shape checks
    return attention.diagonal(offset=-1, dim1=-2, dim2=-1).float().mean(-1)


def first_token_scores(attention: torch.Tensor) -> torch.Tensor:
    """``[layer, head]``: mean attention on position 0 (a resting place for heads with nothing to do)."""
    return _from_second_query(attention)[..., 0].float().mean(-1)


def entropy_scores(attention: torch.Tensor) -> torch.Tensor:
    """``[layer, head]``: mean row entropy in nats; low = focused, ln(n) = spread evenly over n tokens."""
    per_layer = []
    for rows in _from_second_query(attention):
        rows = rows.float()  # [head, query, key]
        per_layer.append(-(rows * rows.clamp_min(1e-30).log()).sum(-1).mean(-1))
    return torch.stack(per_layer)


def induction_scores(attention: torch.Tensor, start: int, period: int) -> torch.Tensor:
    """``[layer, head]``: for tokens from ``start`` repeating with ``period``, mean attention from each token
    of the second copy to the token right after its earlier occurrence (where an induction head looks)."""
    seq = attention.shape[-1]
    queries = torch.arange(start + period, min(start + 2 * period, seq))
    assert len(queries) > 0, "the sequence holds no second copy"
    return attention[:, :, queries, queries - period + 1].float().mean(-1)


def duplicate_token_scores(attention: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``[layer, head]``: mean attention mass on earlier copies of the same token, over the queries that
    have one. All zeros when no token repeats (no query to score)."""
    ids = torch.as_tensor(input_ids).reshape(-1)
    same = ids[:, None] == ids[None, :]  # [query, key]
    earlier_copy = torch.tril(same, diagonal=-1)
    has_copy = earlier_copy.any(-1)
    if not has_copy.any():
        return torch.zeros(attention.shape[:2])
    mass = torch.stack([(layer[:, has_copy].float() * earlier_copy[has_copy]).sum(-1) for layer in attention])
    return mass.mean(-1)  # mass: [layer, head, query with a copy]


def random_tokens(vocab_size: int, length: int, generator: torch.Generator, exclude_ids=()) -> torch.Tensor:
    """``[length]`` ids drawn uniformly from the vocabulary minus ``exclude_ids`` (special tokens)."""
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[list(exclude_ids)] = False
    candidates = allowed.nonzero()[:, 0]
    return candidates[torch.randint(len(candidates), (length,), generator=generator)]


def repeated_random_tokens(
    vocab_size: int, length: int, *, seed: int, prefix_ids=(), exclude_ids=()
) -> tuple[torch.Tensor, int, int]:
    """``prefix + R + R`` for ``length`` random tokens R; returns (input_ids, start of R, period)."""
    random_part = random_tokens(vocab_size, length, torch.Generator().manual_seed(seed), exclude_ids)
    prefix = torch.tensor(list(prefix_ids), dtype=torch.long)
    return torch.cat([prefix, random_part, random_part]), len(prefix), length


@dataclass(frozen=True)
class CopyLosses:
    """Mean next-token loss (nats) on the first and on the second copy of a repeated span."""

    first: float
    second: float

    @property
    def drop(self) -> float:
        return self.first - self.second


def copy_losses(logits: torch.Tensor, input_ids: torch.Tensor, start: int, period: int) -> CopyLosses:
    """Losses predicting each token of the two copies from its prefix. The first token of each copy is
    skipped: nothing in the context predicts it."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [seq, vocab]
    token_loss = -log_probs[:-1].gather(-1, input_ids[1:, None])[:, 0]  # [seq - 1]: loss of predicting token t+1
    first = token_loss[start : start + period - 1]
    second = token_loss[start + period : start + 2 * period - 1]
    assert len(second) == period - 1, f"the sequence ({len(input_ids)} tokens) holds no full second copy"
    return CopyLosses(float(first.mean()), float(second.mean()))


def copying_loss_drop(logits: torch.Tensor, input_ids: torch.Tensor, start: int, period: int) -> float:
    """Nats by which the second copy is easier to predict than the first: what copying from context gains."""
    return copy_losses(logits, input_ids, start, period).drop


@dataclass(frozen=True)
class HeadScores:
    previous_token: torch.Tensor  # [layer, head]
    first_token: torch.Tensor  # [layer, head]
    entropy: torch.Tensor  # [layer, head], nats
    duplicate_token: torch.Tensor  # [layer, head]
    induction: torch.Tensor  # [layer, head], on repeated random tokens
    copying_loss_drop: float  # nats the model gains on the second copy of the random tokens

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "previous token": self.previous_token,
            "induction": self.induction,
            "first token": self.first_token,
            "duplicate token": self.duplicate_token,
            "entropy": self.entropy,
        }


def induction_probe(lm, *, length: int = 40, seed: int = 0, noise: int = 0) -> tuple[Capture, int, int]:
    """Capture the model on random tokens repeated once, after its BOS (if its tokenizer adds one) and
    ``noise`` random tokens, so the repeat does not start at a fixed position."""
    # Whatever the tokenizer adds before a text (OPT's </s>) goes first, as in any real prompt.
    with_text = lm.tokenizer("x")["input_ids"]
    bos = with_text[: with_text.index(lm.tokenizer("x", add_special_tokens=False)["input_ids"][0])]
    vocab_size = min(lm.arch.vocab_size, len(lm.tokenizer))
    special = lm.tokenizer.all_special_ids
    prefix = bos + random_tokens(vocab_size, noise, torch.Generator().manual_seed(seed + 1), special).tolist()
    length = min(length, (lm.arch.max_positions - len(prefix)) // 2)
    ids, start, period = repeated_random_tokens(
        vocab_size, length, seed=seed, prefix_ids=prefix, exclude_ids=special
    )
    return capture_ids(lm, ids), start, period


def head_scores(lm, capture: Capture, *, length: int = 40, seed: int = 0) -> HeadScores:
    """Scores on the student's own prompt, plus induction measured on repeated random tokens."""
    probe, start, period = induction_probe(lm, length=length, seed=seed)
    return HeadScores(
        previous_token=previous_token_scores(capture.attention),
        first_token=first_token_scores(capture.attention),
        entropy=entropy_scores(capture.attention),
        duplicate_token=duplicate_token_scores(capture.attention, capture.input_ids),
        induction=induction_scores(probe.attention, start, period),
        copying_loss_drop=copying_loss_drop(probe.logits, probe.input_ids, start, period),
    )
