"""Compare two models on one prompt: aligned tokens, next-token agreement, matching heads, depth curves.

GPT-2 and OPT share most BPE pieces but number them differently, and OPT prepends ``</s>``; so tokens are
aligned by their character spans in the prompt and distributions by the vocabulary piece strings, never by
ids or positions.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import defaultdict
from dataclasses import dataclass

import torch

from .capture import Capture
from .lens import logit_lens_map
from .tokens import display_tokens

# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class AlignedToken:
    start: int
    end: int
    text: str  # the prompt's characters under this span ("" for added specials such as OPT's </s>)
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
        """(position in A, position in B) of tokens covering the identical characters."""
        return [(row.position_a, row.position_b) for row in self.rows if row.aligned]

    def table(self) -> list[dict]:
        return [
            {"span": f"{r.start}-{r.end}", "text": r.text, "token A": r.token_a, "token B": r.token_b,
             "id A": r.id_a, "id B": r.id_b, "aligned": r.aligned}
            for r in self.rows
        ]


def _spans(capture: Capture) -> dict[tuple[int, int, int], int]:
    """(start, end, occurrence) -> position. Occurrence separates tokens that share a span: the bytes of one
    character split over several tokens all point at that character."""
    seen: dict[tuple[int, int], int] = defaultdict(int)
    keyed = {}
    for position, (start, end) in enumerate(capture.offsets):
        if start == end:
            continue  # an added special token covers no text
        keyed[(start, end, seen[(start, end)])] = position
        seen[(start, end)] += 1
    return keyed


def align_tokens(capture_a: Capture, capture_b: Capture) -> TokenAlignment:
    assert capture_a.text == capture_b.text, "align captures of the same prompt"
    spans_a, spans_b = _spans(capture_a), _spans(capture_b)
    rows = []
    for key in sorted(set(spans_a) | set(spans_b)):
        start, end, _ = key
        a, b = spans_a.get(key), spans_b.get(key)
        rows.append(_row(capture_a, capture_b, start, end, a, b))
    # Added specials (OPT's </s>) have no span: list them first, where the model puts them.
    for capture, side in ((capture_a, "a"), (capture_b, "b")):
        for position, (start, end) in enumerate(capture.offsets):
            if start == end:
                rows.insert(0, _row(capture_a, capture_b, 0, 0, *((position, None) if side == "a" else (None, position))))
    return TokenAlignment(rows=rows)


def _row(capture_a: Capture, capture_b: Capture, start: int, end: int, a: int | None, b: int | None) -> AlignedToken:
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

_pieces_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_pieces_lock = threading.Lock()


def _vocabulary_pieces(tokenizer) -> dict[str, int]:
    """Raw vocabulary piece -> id, special tokens excluded; computed once per tokenizer."""
    with _pieces_lock:
        if tokenizer not in _pieces_cache:
            special = set(tokenizer.all_special_ids)
            _pieces_cache[tokenizer] = {
                piece: token_id for piece, token_id in tokenizer.get_vocab().items() if token_id not in special
            }
        return _pieces_cache[tokenizer]


@dataclass(frozen=True)
class NextTokenComparison:
    top_a: list[tuple[str, float]]  # (display token, probability), most likely first
    top_b: list[tuple[str, float]]
    shared_top: list[str]  # display tokens in both top-k lists
    top_k_overlap: float  # |top-k of A ∩ top-k of B| / k
    kl_a_b: float  # KL(A || B) in nats over the shared vocabulary, renormalised
    kl_b_a: float
    js: float  # Jensen-Shannon divergence in nats (0 .. ln 2)
    mass_outside_a: float  # probability A puts on pieces B's vocabulary lacks (excluded from the divergences)
    mass_outside_b: float
    shared_vocabulary: int


def compare_next_tokens(lm_a, capture_a: Capture, lm_b, capture_b: Capture, k: int = 10) -> NextTokenComparison:
    """Both models' next-token distributions after the whole prompt, matched by vocabulary piece.

    The divergences are computed over the pieces both vocabularies contain, each distribution renormalised
    over that shared support; the mass left outside is reported separately.
    """
    pieces_a, pieces_b = _vocabulary_pieces(lm_a.tokenizer), _vocabulary_pieces(lm_b.tokenizer)
    vocab_a, vocab_b = capture_a.next_logits.shape[0], capture_b.next_logits.shape[0]
    shared = sorted(p for p in pieces_a.keys() & pieces_b.keys() if pieces_a[p] < vocab_a and pieces_b[p] < vocab_b)
    index_a = torch.tensor([pieces_a[p] for p in shared])
    index_b = torch.tensor([pieces_b[p] for p in shared])
    log_p_a = torch.log_softmax(capture_a.next_logits.double(), dim=-1)  # [vocab_a]
    log_p_b = torch.log_softmax(capture_b.next_logits.double(), dim=-1)  # [vocab_b]
    log_q_a = _renormalised(log_p_a[index_a])  # [shared]
    log_q_b = _renormalised(log_p_b[index_b])  # [shared]
    top_a, ids_a = _top(lm_a.tokenizer, log_p_a, k)
    top_b, ids_b = _top(lm_b.tokenizer, log_p_b, k)
    piece_sets = [set(lm.tokenizer.convert_ids_to_tokens(ids)) for lm, ids in ((lm_a, ids_a), (lm_b, ids_b))]
    shared_top_pieces = piece_sets[0] & piece_sets[1]
    return NextTokenComparison(
        top_a=top_a,
        top_b=top_b,
        shared_top=[token for (token, _), token_id in zip(top_a, ids_a)
                    if lm_a.tokenizer.convert_ids_to_tokens(token_id) in shared_top_pieces],
        top_k_overlap=len(shared_top_pieces) / k,
        kl_a_b=kl_divergence(log_q_a, log_q_b),
        kl_b_a=kl_divergence(log_q_b, log_q_a),
        js=js_divergence(log_q_a, log_q_b),
        mass_outside_a=float(1 - log_p_a[index_a].exp().sum()),
        mass_outside_b=float(1 - log_p_b[index_b].exp().sum()),
        shared_vocabulary=len(shared),
    )


def _renormalised(log_p: torch.Tensor) -> torch.Tensor:
    return log_p - torch.logsumexp(log_p, dim=-1)


def _top(tokenizer, log_p: torch.Tensor, k: int) -> tuple[list[tuple[str, float]], list[int]]:
    top = torch.topk(log_p, k)
    ids = top.indices.tolist()
    return list(zip(display_tokens(tokenizer, ids), top.values.exp().tolist())), ids


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """KL(P || Q) in nats from log-probabilities over the same support."""
    p = log_p.exp()
    return float(torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum())


def js_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    return 0.5 * kl_divergence(log_p, log_m) + 0.5 * kl_divergence(log_q, log_m)


# ----------------------------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class HeadMatches:
    heads_a: list[tuple[int, int]]  # (layer, head), layer-major
    heads_b: list[tuple[int, int]]
    similarity: torch.Tensor  # [heads_a, heads_b], 1 = identical patterns on the aligned tokens
    best_b: list[int]  # per head of A, index into heads_b
    best_score: list[float]

    def top_pairs(self, n: int = 10) -> list[tuple[tuple[int, int], tuple[int, int], float]]:
        order = sorted(range(len(self.heads_a)), key=lambda i: -self.best_score[i])[:n]
        return [(self.heads_a[i], self.heads_b[self.best_b[i]], self.best_score[i]) for i in order]


def _aligned_patterns(attention: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """Patterns restricted to aligned queries and keys, rows renormalised, first row dropped, flattened."""
    index = torch.tensor(positions)
    sub = attention.float()[:, :, index][:, :, :, index]  # [layer, head, query, key]
    sub = sub / sub.sum(-1, keepdim=True).clamp_min(1e-12)
    # The first aligned query can only attend to itself in both models: identical for every head, no signal.
    sub = sub[:, :, 1:]
    return sub.reshape(sub.shape[0] * sub.shape[1], -1)  # [layer * head, query * key]


def match_heads(capture_a: Capture, capture_b: Capture, alignment: TokenAlignment) -> HeadMatches:
    """For each head of A, the head of B whose attention pattern on the aligned tokens is most alike.

    Similarity is the cosine of the two patterns (rows renormalised over the aligned keys); since every row
    sums to one, it is 1 exactly when the patterns are identical.
    """
    pairs = alignment.pairs
    assert len(pairs) >= 2, "need at least two aligned tokens to compare attention patterns"
    flat_a = torch.nn.functional.normalize(_aligned_patterns(capture_a.attention, [a for a, _ in pairs]), dim=-1)
    flat_b = torch.nn.functional.normalize(_aligned_patterns(capture_b.attention, [b for _, b in pairs]), dim=-1)
    similarity = flat_a @ flat_b.T  # [heads_a, heads_b]
    best = similarity.max(dim=-1)
    layers_a, heads_a = capture_a.attention.shape[:2]
    layers_b, heads_b = capture_b.attention.shape[:2]
    return HeadMatches(
        heads_a=[(layer, head) for layer in range(layers_a) for head in range(heads_a)],
        heads_b=[(layer, head) for layer in range(layers_b) for head in range(heads_b)],
        similarity=similarity,
        best_b=best.indices.tolist(),
        best_score=best.values.tolist(),
    )


# ----------------------------------------------------------------------------------------------- depth


@dataclass(frozen=True)
class DepthCurve:
    """How one model's guess at one position develops with depth, on a 0..1 scale shared across models."""

    model_name: str
    depth: list[float]  # 0 = embeddings, 1 = after the last block
    final_token: str  # the model's own prediction
    final_token_prob: list[float]  # probability each depth gives to that prediction
    top_token: list[str]  # each depth's own top guess
    top_prob: list[float]
    settled_depth: float  # from here on the top guess equals the final prediction


def depth_curve(lm, capture: Capture, position: int = -1) -> DepthCurve:
    lens = logit_lens_map(lm, capture, positions=[position])
    n_layers = lens.top_ids.shape[0] - 1
    return DepthCurve(
        model_name=lm.name,
        depth=[layer / n_layers for layer in range(n_layers + 1)],
        final_token=lens.top_tokens[-1][0],
        final_token_prob=lens.final_token_probs[:, 0].tolist(),
        top_token=[row[0] for row in lens.top_tokens],
        top_prob=lens.top_probs[:, 0].tolist(),
        settled_depth=lens.settled_layer()[0] / n_layers,
    )
