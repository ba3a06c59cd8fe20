"""Tokenize a prompt with character offsets, and show byte-level BPE pieces readably.

GPT-2 and OPT store each token as bytes mapped to printable characters (a space becomes ``Ġ``).
A student should see ``␣the``, and a token that holds half of a UTF-8 character should show its bytes
(``<0xE2><0x80>``) rather than mojibake.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from .errors import OptLensError

SPACE, NEWLINE, TAB = "␣", "↵", "⇥"
_WHITESPACE = {" ": SPACE, "\n": NEWLINE, "\t": TAB}
_SENTENCEPIECE_SPACE = "▁"
# A lone UTF-16 surrogate (a browser can send one) is no character: the tokenizer cannot encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> original byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    stand_ins = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            stand_ins.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, stand_ins)}


def _show_text(text: str) -> str:
    shown = []
    for char in text:
        if char in _WHITESPACE:
            shown.append(_WHITESPACE[char])
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # a byte that is not valid UTF-8 here (see _show_bytes)
            shown.append(f"<0x{ord(char) - 0xDC00:02X}>")
        elif not char.isprintable():  # a control or invisible character: name its code point
            shown.append(f"<U+{ord(char):04X}>")
        else:
            shown.append(char)
    return "".join(shown)


def _show_bytes(raw: bytes) -> str:
    # surrogateescape keeps each byte of a split UTF-8 character as U+DC80..U+DCFF, which _show_text spells out.
    return _show_text(raw.decode("utf-8", errors="surrogateescape"))


def display_token(piece: str, special: bool = False) -> str:
    """A readable form of one vocabulary piece (as ``convert_ids_to_tokens`` returns it)."""
    if special:
        return piece
    decoder = _byte_decoder()
    if piece and all(char in decoder for char in piece):
        return _show_bytes(bytes(decoder[char] for char in piece))
    return _show_text(piece.replace(_SENTENCEPIECE_SPACE, " "))


def display_tokens(tokenizer, input_ids: list[int]) -> list[str]:
    """Readable pieces; ids the model has but its tokenizer lacks (OPT pads its vocabulary) show as ``<id N>``."""
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(input_ids))
    return [
        display_token(piece, token_id in special) if piece is not None else f"<id {token_id}>"
        for piece, token_id in zip(pieces, input_ids)
    ]


@dataclass(frozen=True)
class Tokenized:
    """A prompt cut into a model's tokens: all the token views and the token alignment need, no forward pass."""

    text: str
    input_ids: torch.Tensor  # [seq]
    tokens: list[str]  # readable display strings, one per token
    offsets: list[tuple[int, int]]  # character span of each token in the prompt; (0, 0) for added specials
    truncated: bool
    n_prompt_tokens: int  # before truncation

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[0]


def tokenize(tokenizer, text: str, max_tokens: int) -> Tokenized:
    if not isinstance(text, str):
        raise OptLensError("The prompt must be text.")
    if text == "":
        raise OptLensError("The prompt is empty: type some text first.")
    # One character for one, so the offsets hold for the text the views show.
    text = _SURROGATE.sub("\N{REPLACEMENT CHARACTER}", text)
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids, offsets = list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]
    if not ids:
        raise OptLensError("The prompt produced no tokens: type some text first.")
    kept = ids[:max_tokens]
    return Tokenized(
        text=text,
        input_ids=torch.tensor(kept, dtype=torch.long),
        tokens=display_tokens(tokenizer, kept),
        offsets=offsets[:max_tokens],
        truncated=len(ids) > max_tokens,
        n_prompt_tokens=len(ids),
    )
