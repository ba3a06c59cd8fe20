"""Two models' next-token distributions compared by what each vocabulary piece stands for (its bytes), not by id."""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..capturing import Capture
from ..errors import OptLensError
from ..tokens import _byte_decoder, display_tokens

logger = logging.getLogger(__name__)

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
    # Per guess of top_a (top_b): whether the other model's top k has it too, matched as top_k_overlap counts.
    in_both_a: list[bool]
    in_both_b: list[bool]
    shared_top: list[str]  # A's display tokens that are also in B's top k, in A's order
    top_k_overlap: float  # A's top-k guesses that are also in B's top k, / k
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
    included; the overlap is the share of A's guesses that B's list also has, matched by ``top_k_matches``
    (by bytes, the end of text as one, other specials by name), which also gives ``in_both_a``/``in_both_b``.
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
    in_both_a, in_both_b = top_k_matches(keys_a, keys_b)
    return NextTokenComparison(
        top_a=top_a,
        top_b=top_b,
        in_both_a=in_both_a,
        in_both_b=in_both_b,
        shared_top=[token for (token, _), both in zip(top_a, in_both_a) if both],
        top_k_overlap=sum(in_both_a) / k,
        kl_a_b=kl_divergence(q_a, q_b),
        kl_b_a=kl_divergence(q_b, q_a),
        js=js_divergence(q_a, q_b),
        mass_outside_a=outside_a,
        mass_outside_b=outside_b,
        shared_vocabulary=len(shared),
    )


def top_k_matches(keys_a: list, keys_b: list) -> tuple[list[bool], list[bool]]:
    """Per guess in each top list, whether the other list has it: the one matching behind both the overlap
    figure and any marking of shared guesses. Keys are what ``_top`` says each guess stands for (bytes, the end
    of the text as one, other specials by name), so GPT-2's ``<|endoftext|>`` matches OPT's ``</s>``, never a
    display string, which differs between the two."""
    in_both = set(keys_a) & set(keys_b)
    return [key in in_both for key in keys_a], [key in in_both for key in keys_b]


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
