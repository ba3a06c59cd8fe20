"""Compare two models on one prompt: aligned tokens, next-token agreement, matching heads, depth curves.

GPT-2 and OPT share most BPE pieces but number them differently, and OPT prepends ``</s>``; so tokens are
aligned by the characters they cover and distributions by what each vocabulary piece stands for, never by
ids or positions.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import LayerPatterns, Patterns
from .capturing import Capture
from .errors import OptLensError
from .lens import LensMap, logit_lens_map
from .tokens import Tokenized, _byte_decoder, display_tokens

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class AlignedToken:
    """One row of the alignment: a token of A and its counterpart in B, or a token only one model has."""

    start: int  # character span in the prompt; an empty span where an added special token (OPT's </s>) sits
    end: int
    text: str  # the prompt's characters under the span: the whole character for each piece of a split one
    position_a: int | None
    position_b: int | None
    token_a: str | None
    token_b: str | None
    id_a: int | None
    id_b: int | None

    @property
    def aligned(self) -> bool:
        return self.position_a is not None and self.position_b is not None


@dataclass(frozen=True)
class TokenAlignment:
    rows: list[AlignedToken]  # every token of both models, in prompt order

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(position in A, position in B) of tokens that stand for the same characters, in prompt order."""
        return [(row.position_a, row.position_b) for row in self.rows if row.aligned]

    @property
    def unaligned(self) -> list[AlignedToken]:
        return [row for row in self.rows if not row.aligned]

    def table(self) -> list[dict]:
        return [
            {"span": f"{r.start}-{r.end}", "text": r.text, "token A": r.token_a, "token B": r.token_b,
             "id A": r.id_a, "id B": r.id_b, "aligned": r.aligned}
            for r in self.rows
        ]


def _stretches(capture: Tokenized | Capture) -> dict[tuple[int, int], list[int]]:
    """Tokens grouped into stretches of whole characters: (start, end) -> positions.

    A byte-level BPE splits a multi-byte character (an emoji, most CJK) over tokens whose spans overlap, as
    (7, 9) and (8, 9) for " 😀"; such tokens form one stretch, the others a stretch each. Added special tokens
    cover no characters and belong to none.
    """
    stretches: dict[tuple[int, int], list[int]] = {}
    start = end = 0
    positions: list[int] = []
    for position, (token_start, token_end) in enumerate(capture.offsets):
        if token_start == token_end:
            continue
        if positions and token_start < end:  # shares a character with the stretch so far
            end = max(end, token_end)
            positions.append(position)
            continue
        if positions:
            stretches[(start, end)] = positions
        start, end, positions = token_start, token_end, [position]
    if positions:
        stretches[(start, end)] = positions
    return stretches


def align_tokens(capture_a: Tokenized | Capture, capture_b: Tokenized | Capture) -> TokenAlignment:
    """Pair the tokens of two tokenizations of one prompt (``opt_lens.tokens.tokenize``, or captures) that
    cover identical characters: tokenization alone, no forward pass.

    A token covering whole characters pairs with the token of the other model that has the identical span.
    The pieces of split characters pair only where both models split that stretch into the same pieces
    (same spans, same bytes): the spans alone do not say which bytes a piece holds. An added special token
    pairs only with the same special at the same place. Everything else (OPT's ``</s>`` against GPT-2,
    words the two tokenizers cut differently) is listed unaligned with its span.
    """
    if capture_a.text != capture_b.text:
        raise OptLensError("Tokens can only be aligned between two tokenizations of the same prompt.")
    stretches_a, stretches_b = _stretches(capture_a), _stretches(capture_b)
    partner: dict[int, int] = {}
    for span in stretches_a.keys() & stretches_b.keys():
        a, b = stretches_a[span], stretches_b[span]
        same_pieces = [(capture_a.offsets[i], capture_a.tokens[i]) for i in a] == [
            (capture_b.offsets[j], capture_b.tokens[j]) for j in b
        ]
        if len(a) == len(b) == 1 or same_pieces:
            partner.update(zip(a, b))
    specials_a, specials_b = _specials(capture_a), _specials(capture_b)
    partner.update((specials_a[key], specials_b[key]) for key in specials_a.keys() & specials_b.keys())
    paired_b = set(partner.values())
    # Sorted by span; where spans tie, aligned rows first, then A's leftovers, then B's, each in token order.
    keyed = sorted(
        [(_anchor(capture_a, a), 0, a, a, b) for a, b in partner.items()]
        + [(_anchor(capture_a, a), 1, a, a, None) for a in range(capture_a.seq_len) if a not in partner]
        + [(_anchor(capture_b, b), 2, b, None, b) for b in range(capture_b.seq_len) if b not in paired_b]
    )
    return TokenAlignment(rows=[_row(capture_a, capture_b, span, a, b) for span, _, _, a, b in keyed])


def _specials(capture: Tokenized | Capture) -> dict[tuple[tuple[int, int], str, int], int]:
    """Added special tokens by (where they sit, token, occurrence there) -> position: the same special at the
    same place (OPT's </s> before the prompt, in two OPT models) pairs up."""
    keyed: dict[tuple[tuple[int, int], str, int], int] = {}
    seen: Counter = Counter()
    for position, (start, end) in enumerate(capture.offsets):
        if start == end:
            special = (_anchor(capture, position), capture.tokens[position])
            keyed[(*special, seen[special])] = position
            seen[special] += 1
    return keyed


def _anchor(capture: Tokenized | Capture, position: int) -> tuple[int, int]:
    """The token's span; for an added special token, the empty span where it sits (after the token before it)."""
    start, end = capture.offsets[position]
    if start != end:
        return start, end
    before = [offset_end for offset_start, offset_end in capture.offsets[:position] if offset_start != offset_end]
    return (before[-1],) * 2 if before else (0, 0)


def _row(capture_a: Tokenized | Capture, capture_b: Tokenized | Capture, span: tuple[int, int], a: int | None, b: int | None) -> AlignedToken:
    start, end = span
    return AlignedToken(
        start=start,
        end=end,
        text=capture_a.text[start:end],
        position_a=a,
        position_b=b,
        token_a=None if a is None else capture_a.tokens[a],
        token_b=None if b is None else capture_b.tokens[b],
        id_a=None if a is None else int(capture_a.input_ids[a]),
        id_b=None if b is None else int(capture_b.input_ids[b]),
    )


# ---------------------------------------------------------------------------------------- next token

_SENTENCEPIECE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class _EndOfText:
    """What a tokenizer's end-of-text token means as a guess, whatever its name (GPT-2's ``<|endoftext|>``,
    OPT's ``</s>``): the text ends here. Both models learnt it at the boundaries between documents."""

    def __repr__(self) -> str:
        return "END_OF_TEXT"


END_OF_TEXT = _EndOfText()
_meanings_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_meanings_lock = threading.Lock()


def _meanings(tokenizer) -> list[bytes | str | _EndOfText]:
    """Per id, what the piece stands for: its bytes; END_OF_TEXT for the end-of-text token; for another special
    token its own name (a str, which never equals any bytes). Computed once per tokenizer: a vocabulary has
    ~50k pieces."""
    with _meanings_lock:
        if tokenizer not in _meanings_cache:
            logger.debug("Reading the %d pieces of %s", len(tokenizer), type(tokenizer).__name__)
            pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            special = set(tokenizer.all_special_ids)
            added = tokenizer.added_tokens_decoder  # tokens added to the vocabulary hold their literal text
            spell = _spelling([piece for token_id, piece in enumerate(pieces) if token_id not in added])
            _meanings_cache[tokenizer] = [
                END_OF_TEXT if token_id == tokenizer.eos_token_id
                else piece if token_id in special else piece.encode() if token_id in added else spell(piece)
                for token_id, piece in enumerate(pieces)
            ]
        return _meanings_cache[tokenizer]


def _spelling(vocabulary: list[str]) -> Callable[[str], bytes]:
    """How a vocabulary's own pieces spell bytes."""
    decoder = _byte_decoder()
    # A byte-level BPE (GPT-2, OPT) spells every byte as one printable stand-in, so every piece is spelt in them.
    if all(char in decoder for piece in vocabulary for char in piece):
        return lambda piece: bytes(decoder[char] for char in piece)
    return _sentencepiece_bytes


def _sentencepiece_bytes(piece: str) -> bytes:
    """SentencePiece writes a space as "▁" and a byte with no piece of its own as "<0xNN>"."""
    byte = _SENTENCEPIECE_BYTE.fullmatch(piece)
    return bytes([int(byte[1], 16)]) if byte else piece.replace("▁", " ").encode()


@dataclass(frozen=True)
class NextTokenComparison:
    top_a: list[tuple[str, float]]  # (display token, probability), most likely first
    top_b: list[tuple[str, float]]
    shared_top: list[str]  # A's display tokens that are also in B's top k, in A's order
    top_k_overlap: float  # |top-k of A ∩ top-k of B| / k
    kl_a_b: float  # KL(A || B) in nats over the shared support, both renormalised
    kl_b_a: float
    js: float  # Jensen-Shannon divergence in nats over the shared support (0 .. ln 2)
    mass_outside_a: float  # probability A puts on ids outside the shared support (left out of the divergences)
    mass_outside_b: float
    shared_vocabulary: int  # size of the shared support


def compare_next_tokens(lm_a, capture_a: Capture, lm_b, capture_b: Capture, k: int = 10) -> NextTokenComparison:
    """Both models' next-token distributions after the whole prompt, matched by what each piece stands for.

    The shared support is the set of byte strings that ordinary (non-special) pieces of both vocabularies
    spell, plus the end of the text (GPT-2's ``<|endoftext|>`` and OPT's ``</s>`` are the same guess); an id
    whose bytes the other vocabulary lacks, another special token, and padding ids beyond the tokenizer lie
    outside it. KL and Jensen-Shannon are computed over the shared support with each distribution
    renormalised over it (a model's probability for a string is the sum over its ids that spell it); the
    mass each model puts outside is reported beside them. The top-k lists are the models' own, specials
    included, and the overlap counts the pieces (by bytes, the end of text as one, other specials by name)
    both lists contain.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise OptLensError(f"k, the number of top guesses to compare, must be a whole number of at least 1, not {k!r}.")
    log_p_a = torch.log_softmax(capture_a.next_logits.double(), dim=-1)  # [vocab_a]
    log_p_b = torch.log_softmax(capture_b.next_logits.double(), dim=-1)  # [vocab_b]
    meanings_a = _meanings(lm_a.tokenizer)[: log_p_a.shape[0]]
    meanings_b = _meanings(lm_b.tokenizer)[: log_p_b.shape[0]]
    common = set(meanings_a) & set(meanings_b)
    ordered = sorted(m for m in common if isinstance(m, bytes)) + [END_OF_TEXT] * (END_OF_TEXT in common)
    shared = {m: i for i, m in enumerate(ordered)}
    assert shared, "the two vocabularies share no ordinary piece"
    q_a, outside_a = _on_support(log_p_a.exp(), meanings_a, shared)
    q_b, outside_b = _on_support(log_p_b.exp(), meanings_b, shared)
    top_a, keys_a = _top(lm_a.tokenizer, log_p_a, k)
    top_b, keys_b = _top(lm_b.tokenizer, log_p_b, k)
    in_both = set(keys_a) & set(keys_b)
    return NextTokenComparison(
        top_a=top_a,
        top_b=top_b,
        shared_top=[token for (token, _), key in zip(top_a, keys_a) if key in in_both],
        top_k_overlap=len(in_both) / k,
        kl_a_b=kl_divergence(q_a, q_b),
        kl_b_a=kl_divergence(q_b, q_a),
        js=js_divergence(q_a, q_b),
        mass_outside_a=outside_a,
        mass_outside_b=outside_b,
        shared_vocabulary=len(shared),
    )


def _on_support(probs: torch.Tensor, meanings: list, support: dict) -> tuple[torch.Tensor, float]:
    """The distribution over the support's strings, renormalised, and the mass left outside it."""
    index = torch.tensor([support.get(m, -1) for m in meanings] + [-1] * (probs.shape[0] - len(meanings)))  # [vocab]
    inside = index >= 0  # [vocab]
    on_support = torch.zeros(len(support), dtype=probs.dtype).index_add_(0, index[inside], probs[inside])  # [support]
    mass = on_support.sum()
    return on_support / mass, float(probs[~inside].sum())


def _top(tokenizer, log_p: torch.Tensor, k: int) -> tuple[list[tuple[str, float]], list[bytes | str]]:
    top = torch.topk(log_p, min(k, log_p.shape[0]))
    ids = top.indices.tolist()
    meanings = _meanings(tokenizer)
    # A padding id beyond the tokenizer (OPT's vocabulary is padded to 50272) has no piece: name it by its id.
    padding = {i: f"<id {i}>" for i in ids if i >= len(meanings)}
    shown = iter(display_tokens(tokenizer, [i for i in ids if i not in padding]))
    tokens = [padding[i] if i in padding else next(shown) for i in ids]
    keys = [padding[i] if i in padding else meanings[i] for i in ids]
    return list(zip(tokens, top.values.exp().tolist())), keys


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(P || Q) in nats between two probability vectors over the same support (terms with p = 0 count 0)."""
    assert p.shape == q.shape, f"distributions over different supports: {tuple(p.shape)} vs {tuple(q.shape)}"
    p, q = p.double(), q.double()
    terms = p * (p.log() - q.log())  # [support]
    return float(torch.where(p > 0, terms, torch.zeros_like(terms)).sum())


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence in nats: the mean KL of P and Q to their average (0 .. ln 2)."""
    m = (p.double() + q.double()) / 2
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


# ----------------------------------------------------------------------------------------------- heads


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


# ----------------------------------------------------------------------------------------------- depth


@dataclass(frozen=True)
class DepthCurve:
    """How one model's guess at one position develops with depth, on a 0..1 scale shared across models."""

    model_name: str
    position: int
    depth: list[float]  # layer / n_layers: 0 = embeddings, 1 = after the last block (the model's output)
    final_token: str  # the model's own prediction
    final_token_prob: list[float]  # probability each depth gives to that prediction
    top_token: list[str]  # each depth's own top guess
    top_prob: list[float]
    settled_depth: float  # from here on the top guess equals the final prediction


def lens_depth_curve(lens: LensMap, model_name: str = "", column: int = -1) -> DepthCurve:
    """The depth curve of one column of a lens map (by default its last position)."""
    n_layers = lens.top_ids.shape[0] - 1
    assert n_layers >= 1, "a lens map needs the embeddings and at least one block"
    return DepthCurve(
        model_name=model_name,
        position=lens.positions[column],
        depth=[layer / n_layers for layer in range(n_layers + 1)],
        final_token=lens.top_tokens[-1][column],
        final_token_prob=lens.final_token_probs[:, column].tolist(),
        top_token=[row[column] for row in lens.top_tokens],
        top_prob=lens.top_probs[:, column].tolist(),
        settled_depth=lens.settled_layer()[column] / n_layers,
    )


def depth_curve(lm, capture: Capture, position: int = -1) -> DepthCurve:
    """One model's curve at ``position`` (default: the end of the prompt), reading only that position."""
    return lens_depth_curve(logit_lens_map(lm, capture, positions=[position]), lm.name)
