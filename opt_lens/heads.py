"""Head scores: which heads look at the previous token, copy via induction, rest on the first token.

Scores read attention patterns (``opt_lens.attention``: recorded query and key states, or stored patterns)
one layer and one block of query rows at a time, so scoring a 2048-token capture never holds more than a
few tens of MB of rows. ``head_scores`` also runs the model once on repeated random tokens for the
induction score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import Patterns, StoredPatterns, row_blocks
from .capturing import Capture, capture_ids
from .errors import OptLensError

# A measure maps a block of attention rows [head, query, key] and the rows' query positions [query] to one
# value per head and row [head, query]; a score is its sum over the scored rows divided by a count of rows.
Measure = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


def _scores(patterns: Patterns, queries: torch.Tensor, measures: dict[str, tuple[Measure, int]],
            progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """``{name: [layer, head]}``: each measure summed over the rows ``queries`` and divided by its count;
    ``progress(layers done, layers)`` after each layer (a long prompt's scores take tens of seconds)."""
    sums = {name: torch.zeros(patterns.n_layers, patterns.n_heads) for name in measures}
    for layer in range(patterns.n_layers):
        for block in row_blocks(len(queries), patterns.n_heads, patterns.n_tokens):
            positions = queries[block]  # [query]
            rows = patterns.rows(layer, positions)  # [head, query, key]
            for name, (measure, _) in measures.items():
                sums[name][layer] += measure(rows, positions).sum(-1)
        if progress:
            progress(layer + 1, patterns.n_layers)
    return {name: sums[name] / count for name, (_, count) in measures.items()}


def _score(patterns: Patterns, queries: torch.Tensor, measure: Measure) -> torch.Tensor:
    """``[layer, head]``: the mean of one measure over the rows ``queries``."""
    return _scores(patterns, queries, {"score": (measure, len(queries))})["score"]


def _as_patterns(patterns: Patterns | torch.Tensor) -> Patterns:
    # A notebook (or the demo training script) may hold whole patterns [layer, head, query, key].
    return StoredPatterns(patterns) if isinstance(patterns, torch.Tensor) else patterns


def _after_first(patterns: Patterns) -> torch.Tensor:
    if patterns.n_tokens < 2:
        raise OptLensError("Head scores need at least two tokens.")
    return torch.arange(1, patterns.n_tokens)  # query 0 can only attend to itself


def _previous_token(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return rows[:, torch.arange(len(positions)), positions - 1]  # [head, query]


def _first_token(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return rows[..., 0]  # [head, query]


def _entropy(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return torch.special.entr(rows).sum(-1)  # [head, query], nats: -p ln p, 0 where p = 0


def _earlier_copies(input_ids: torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(input_ids).reshape(-1)
    return torch.tril(ids[:, None] == ids[None, :], diagonal=-1)  # [query, key]: an earlier key holds the same id


def _duplicate_token(earlier_copy: torch.Tensor) -> Measure:
    # Rows without an earlier copy add zero; the score divides by the rows that have one.
    return lambda rows, positions: (rows * earlier_copy[positions]).sum(-1)  # [head, query]


def previous_token_scores(patterns: Patterns | torch.Tensor) -> torch.Tensor:
    """``[layer, head]``: mean attention from each token (after the first) to the token just before it."""
    patterns = _as_patterns(patterns)
    queries = _after_first(patterns)
    return _score(patterns, queries, _previous_token)


def first_token_scores(patterns: Patterns | torch.Tensor) -> torch.Tensor:
    """``[layer, head]``: mean attention on position 0 (a resting place for heads with nothing to do)."""
    patterns = _as_patterns(patterns)
    queries = _after_first(patterns)
    return _score(patterns, queries, _first_token)


def entropy_scores(patterns: Patterns | torch.Tensor) -> torch.Tensor:
    """``[layer, head]``: mean row entropy in nats; low = focused, ln(n) = spread evenly over n tokens."""
    patterns = _as_patterns(patterns)
    queries = _after_first(patterns)
    return _score(patterns, queries, _entropy)


def duplicate_token_scores(patterns: Patterns | torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``[layer, head]``: mean attention mass on earlier copies of the same token, over the queries that
    have one. All zeros when no token repeats (no query to score)."""
    patterns = _as_patterns(patterns)
    earlier_copy = _earlier_copies(torch.as_tensor(input_ids)[: patterns.n_tokens])
    has_copy = earlier_copy.any(-1).nonzero()[:, 0]  # [query]
    if len(has_copy) == 0:
        return torch.zeros(patterns.n_layers, patterns.n_heads)
    return _score(patterns, has_copy, _duplicate_token(earlier_copy))


def induction_scores(patterns: Patterns | torch.Tensor, start: int, period: int) -> torch.Tensor:
    """``[layer, head]``: for tokens from ``start`` repeating with ``period``, mean attention from each token
    of the second copy to the token right after its earlier occurrence (where an induction head looks)."""
    patterns = _as_patterns(patterns)
    queries = torch.arange(start + period, min(start + 2 * period, patterns.n_tokens))
    if len(queries) == 0:
        raise OptLensError("The sequence holds no second copy to score induction on.")

    def after_earlier_occurrence(rows, positions):
        return rows[:, torch.arange(len(positions)), positions - period + 1]  # [head, query]

    return _score(patterns, queries, after_earlier_occurrence)


def prompt_scores(patterns: Patterns | torch.Tensor, input_ids: torch.Tensor,
                  progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """Previous-token, first-token, entropy and duplicate-token scores ``[layer, head]`` in one pass over the rows."""
    patterns = _as_patterns(patterns)
    queries = _after_first(patterns)
    earlier_copy = _earlier_copies(torch.as_tensor(input_ids)[: patterns.n_tokens])
    n_with_copy = int(earlier_copy.any(-1).sum())
    return _scores(
        patterns,
        queries,
        {
            "previous_token": (_previous_token, len(queries)),
            "first_token": (_first_token, len(queries)),
            "entropy": (_entropy, len(queries)),
            "duplicate_token": (_duplicate_token(earlier_copy), max(n_with_copy, 1)),  # all zero when none
        },
        progress,
    )


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
    if len(first) == 0 or len(second) != period - 1:
        raise OptLensError(f"The sequence ({len(input_ids)} tokens) holds no full second copy to measure copying on.")
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


def head_scores(lm, capture: Capture, *, length: int = 40, seed: int = 0,
                progress: Progress | None = None) -> HeadScores:
    """Scores on the student's own prompt, plus induction measured on repeated random tokens (a short probe);
    ``progress(layers done, layers)`` as the prompt's layers are scored."""
    probe, start, period = induction_probe(lm, length=length, seed=seed)
    return HeadScores(
        **prompt_scores(capture.patterns, capture.input_ids, progress),
        induction=induction_scores(probe.patterns, start, period),
        copying_loss_drop=copying_loss_drop(probe.logits, probe.input_ids, start, period),
    )
