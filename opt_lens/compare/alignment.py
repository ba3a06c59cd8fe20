"""Tokens of two models aligned by the characters they cover, never by ids or positions.

GPT-2 and OPT share most BPE pieces but number them differently, and OPT prepends ``</s>``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..capturing import Capture
from ..errors import OptLensError
from ..tokens import Tokenized


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
