"""Heads of two models matched by their attention patterns on the tokens both models share."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention import LayerPatterns, Patterns
from ..capturing import Capture
from ..errors import OptLensError
from .alignment import TokenAlignment

# Cells (query, key) compared per block: each [heads, cells] block of float64 is ~10 MB for 144 heads, and a
# block's intermediates about four times that; larger blocks are no faster.
_CELLS_PER_BLOCK = 2**13


@dataclass(frozen=True)
class HeadMatches:
    heads_a: list[tuple[int, int]]  # (layer, head), layer-major: row i of `similarity`
    heads_b: list[tuple[int, int]]  # column j of `similarity`
    similarity: torch.Tensor  # [heads_a, heads_b]: 1 - mean total-variation distance; 1 = identical patterns
    best_b: list[int]  # per head of A, the column of its most similar head of B
    best_score: list[float]
    n_tokens: int  # aligned tokens the patterns were compared on
    # Each head's similarity to the uniform causal pattern (every row spread evenly over the tokens so far):
    # a head that reads nothing in particular. Two such heads are alike without doing the same job.
    uniform_a: list[float]
    uniform_b: list[float]

    def top_pairs(self, n: int = 10) -> list[tuple[tuple[int, int], tuple[int, int], float]]:
        """The n heads of A with the closest match in B, closest first: (head of A, its best in B, similarity)."""
        order = sorted(range(len(self.heads_a)), key=lambda i: (-self.best_score[i], i))[:n]
        return [(self.heads_a[i], self.heads_b[self.best_b[i]], self.best_score[i]) for i in order]

    def above_baseline(self, i: int) -> float:
        """How much closer head i of A is to its best match than either head of the pair is to uniform attention."""
        return self.best_score[i] - max(self.uniform_a[i], self.uniform_b[self.best_b[i]])


def match_heads(capture_a: Capture, capture_b: Capture, alignment: TokenAlignment) -> HeadMatches:
    """For each head of A, the head of B whose attention pattern on the aligned tokens is most alike.

    Each pattern is cut to the aligned query rows and key columns (attention to unaligned tokens such as OPT's
    ``</s>`` is dropped) and each row renormalised over those keys. Similarity = 1 - the mean over query rows
    of the total-variation distance between the two rows, so 1 means identical patterns and 0 disjoint ones.
    The work grows as heads_a * heads_b * tokens**2 / 2: for GPT-2 against OPT-125m (144 x 144 heads) at 256
    aligned tokens, about 0.7 s of CPU time (0.4 s on two idle cores), sixteen times that at 1024.
    """
    assert all(a < capture_a.seq_len and b < capture_b.seq_len for a, b in alignment.pairs), "alignment of other captures"
    # Captures with an attention_prefix hold the patterns of their first tokens only: compare those.
    pairs = [(a, b) for a, b in alignment.pairs if a < capture_a.attention_tokens and b < capture_b.attention_tokens]
    if len(pairs) < 2:
        raise OptLensError("The two models share fewer than two tokens of this prompt: no attention to compare.")
    positions_a, positions_b = [a for a, _ in pairs], [b for _, b in pairs]
    # The causal shortcut in _aligned_rows needs the aligned tokens in the same order in both models.
    assert positions_a == sorted(positions_a) and positions_b == sorted(positions_b), "aligned pairs out of order"
    heads_a, heads_b = _head_labels(capture_a.patterns), _head_labels(capture_b.patterns)
    # Every block of rows reads every layer: hold each layer's states for the whole comparison.
    layers_a = [capture_a.patterns.layer(layer) for layer in range(capture_a.patterns.n_layers)]
    layers_b = [capture_b.patterns.layer(layer) for layer in range(capture_b.patterns.n_layers)]
    l1 = torch.zeros(len(heads_a), len(heads_b), dtype=torch.float64)  # [heads_a, heads_b]
    l1_uniform_a = torch.zeros(len(heads_a), dtype=torch.float64)
    l1_uniform_b = torch.zeros(len(heads_b), dtype=torch.float64)
    for queries in _query_blocks(len(pairs)):
        rows_a = _aligned_rows(layers_a, capture_a.attention_tokens, positions_a, queries)  # [heads_a, cell]
        rows_b = _aligned_rows(layers_b, capture_b.attention_tokens, positions_b, queries)  # [heads_b, cell]
        l1 += torch.cdist(rows_a, rows_b, p=1)
        uniform = _uniform_cells(queries)  # [cell]
        l1_uniform_a += (rows_a - uniform).abs().sum(-1)
        l1_uniform_b += (rows_b - uniform).abs().sum(-1)
    # Summed over a row's cells, |a - b| is twice that row's total-variation distance.
    similarity = (1 - l1 / (2 * len(pairs))).float()  # [heads_a, heads_b]
    best = similarity.max(dim=-1)
    return HeadMatches(
        heads_a=heads_a,
        heads_b=heads_b,
        similarity=similarity,
        best_b=best.indices.tolist(),
        best_score=best.values.tolist(),
        n_tokens=len(pairs),
        uniform_a=(1 - l1_uniform_a / (2 * len(pairs))).tolist(),
        uniform_b=(1 - l1_uniform_b / (2 * len(pairs))).tolist(),
    )


def _query_blocks(n_queries: int) -> list[range]:
    """Consecutive aligned query rows, about _CELLS_PER_BLOCK cells a block (query q has q + 1 keys)."""
    blocks, start, cells = [], 0, 0
    for query in range(n_queries):
        cells += query + 1
        if cells >= _CELLS_PER_BLOCK:
            blocks.append(range(start, query + 1))
            start, cells = query + 1, 0
    if start < n_queries:
        blocks.append(range(start, n_queries))
    return blocks


def _uniform_cells(queries: range) -> torch.Tensor:
    """``[cell]``: the uniform causal pattern over the cells of ``_aligned_rows`` (row q: 1 / (q + 1) per key)."""
    query, _ = torch.tril_indices(queries.stop, queries.stop)
    query = query[query >= queries.start]
    return 1.0 / (query + 1).double()


def _aligned_rows(layers: list[LayerPatterns], n_tokens: int, positions: list[int], queries: range) -> torch.Tensor:
    """``[layer * head, cell]``: the aligned query rows ``queries`` over the aligned keys, each row renormalised.

    A decoder-only model attends to nothing later, so of each row only the keys at or before the query are
    kept (the cells): the rest is zero in both models, and leaving it out halves the work.
    """
    index = torch.tensor(positions)  # [aligned]
    query, key = torch.tril_indices(queries.stop, queries.stop)  # [cell] each, in aligned order
    in_block = query >= queries.start
    query, key = query[in_block], key[in_block]
    row = query - queries.start  # [cell]
    flat_cell = row * n_tokens + index[key]  # [cell]: where the cell sits in the block's row * key
    block_positions = index[queries.start : queries.stop]  # [row]
    cells = torch.cat(
        [states.rows(block_positions).flatten(1).index_select(1, flat_cell) for states in layers]
    ).double()  # [layer * head, cell]
    row_mass = torch.zeros(cells.shape[0], len(queries), dtype=cells.dtype).index_add_(1, row, cells)  # [head, row]
    # A query attends to itself, which is aligned, so no row's mass is zero.
    return cells / row_mass[:, row]  # [layer * head, cell]


def _head_labels(patterns: Patterns) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(patterns.n_layers) for head in range(patterns.n_heads)]
