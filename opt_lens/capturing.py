"""Run one forward pass and keep what the views need: the residual stream, the model's own next-token logits,
each block's call, and what attention patterns are rebuilt from.

The run is a ``trace`` (tracing.py), which owns the hooks and the model's lock: each capture gets exactly the
result it would get alone. Where the model routes attention through transformers' interface, attention.py
rebuilds a layer's query and key states from the recorded block input and call when they are read; where it
does not, eager attention's returned patterns are stored. Any other point of a layer (each head's output,
the MLP's neurons, value states) is recorded if asked for, or rebuilt the same way on demand: rerunning a
block on the same input with the same call gives the forward pass's own values. A ``Capture`` is never
changed after it is built, so one cached capture can serve many students and every sweep.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

import torch

from .ablation import Ablation, ablation_edits, ablation_spec
from .attention import RECORDED, Patterns, RecordedPatterns, StoredPatterns, capture_path
from .blocks import BlockCall
from .errors import OptLensError
from .tokens import display_tokens, tokenize
from .tracing import Edit, Point, readout, trace, trace_blocks

logger = logging.getLogger(__name__)

# Eager capture (models whose attention bypasses transformers' interface) stores whole patterns: those of a
# long prompt as float16 (within 5e-4 of the model's float32 values) to bound memory.
FLOAT32_ATTENTION_BYTES = 64 * 2**20
# Points a capture can keep for every layer, as [layer, seq, ...]; any other is rebuilt per layer on demand.
CAPTURE_POINTS = ("attn_out", "mlp_out", "z", "mlp_hidden")
# Points a capture can rebuild for one layer by rerunning that block (``Capture.point``).
REBUILT_POINTS = ("z", "attn_out", "mlp_hidden", "mlp_out", "qkv")


@dataclass(frozen=True, eq=False, repr=False)
class Capture:
    """One forward pass of a prompt, as the views and the sweeps read it. Public: the fields below, ``pattern``
    and ``attention_rows`` (attention), ``logits``, ``point`` (any traced point of one layer: each head's
    output ``z``, the MLP's neurons, query/key/value states, ...), ``head_output`` (each head's output at a
    position), ``block_calls`` (what a sweep reruns blocks with), ``loaded_model`` (the model it was taken on)
    and ``ablation_edits`` (its ablation as trace edits)."""

    model_name: str
    text: str
    input_ids: torch.Tensor  # [seq]
    tokens: list[str]  # readable display strings, one per token
    offsets: list[tuple[int, int]]  # character span of each token in `text`
    truncated: bool
    n_prompt_tokens: int  # before truncation
    patterns: Patterns  # attention over the first `attention_tokens` tokens, rebuilt per head on demand
    resid: torch.Tensor  # [layer + 1, seq, d_model]: embeddings, then the output of each block
    next_logits: torch.Tensor  # [vocab]: the model's own logits at the last position
    attn_out: torch.Tensor | None = None  # [layer, seq, d_model] when captured
    mlp_out: torch.Tensor | None = None  # [layer, seq, d_model] when captured
    ablation: Ablation | None = None  # what was knocked out of this run (every field describes it)
    block_calls: tuple[BlockCall, ...] = ()  # per block, the rest of its call (mask, rotary embeddings, ...)
    z: torch.Tensor | None = None  # [layer, seq, head, d_head] when captured: each head's output
    mlp_hidden: torch.Tensor | None = None  # [layer, seq, d_mlp] when captured: the MLP's neurons
    # A weak reference: a cached capture must not keep an evicted model's weights alive.
    _model: weakref.ref | None = field(default=None, repr=False)
    _edits: tuple[Edit, ...] = field(default=(), repr=False)  # the ablation as applied, for rebuilt points

    def __repr__(self) -> str:
        return f"Capture({self.model_name!r}, {self.seq_len} tokens, truncated={self.truncated})"

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[0]

    @property
    def attention_tokens(self) -> int:
        """How many leading tokens the patterns cover: all, unless captured with an ``attention_prefix``."""
        return self.patterns.n_tokens

    def pattern(self, layer: int, head: int) -> torch.Tensor:
        """``[query, key]`` float32: one head's attention pattern over the tokens the patterns cover, rebuilt from
        the recorded query and key states (within 1e-5 of transformers' eager pattern; see attention.py)."""
        return self.attention_rows(layer, torch.arange(self.attention_tokens), heads=slice(head, head + 1))[0]

    def attention_rows(self, layer: int, queries: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        """``[head, query, key]`` float32: the attention rows of positions ``queries`` (below ``attention_tokens``)
        over every key the patterns cover, for the heads ``heads``: what views read a block of rows with."""
        return self.patterns.rows(layer, queries, heads)

    @property
    def attention(self) -> torch.Tensor:
        """``[layer, head, query, key]`` float32, built on each access (600 MB for 1024 GPT-2 tokens): for short
        prompts and notebooks. Views read ``pattern`` or blocks of rows instead."""
        queries = torch.arange(self.attention_tokens)
        return torch.stack([self.patterns.rows(layer, queries) for layer in range(self.patterns.n_layers)])

    @property
    def logits(self) -> torch.Tensor:
        """``[seq, vocab]`` logits, read from the last residual stream through the model's own readout under its
        lock on each access (200 MB for 1024 GPT-2 tokens, which most views never need): the capture keeps no
        copy. Within 1e-5 of the forward pass's logits; ``next_logits`` is the forward pass's own last row."""
        return readout(self.loaded_model(), self.resid[-1])  # [seq, vocab]

    def taken_on(self, lm) -> bool:
        """Whether this capture was taken on the loaded model object ``lm`` (which is still loaded)."""
        return self._model is not None and self._model() is lm

    def loaded_model(self, lm=None):
        """The ``LoadedModel`` this capture was taken on, while it is still loaded; given ``lm`` (an analysis
        function's argument), checked to be that model."""
        taken_on = self._model() if self._model is not None else None
        if taken_on is None and lm is not None and self._model is None and lm.name == self.model_name:
            return lm  # a pickled copy (which keeps no reference) used with a model of its name
        if taken_on is None:
            raise OptLensError("This capture's model is no longer loaded; run capture() again to get logits.")
        if lm is not None and lm is not taken_on:
            raise OptLensError(f"This capture was taken on {self.model_name}, not on the model {lm.name} given with it.")
        return taken_on

    def ablation_edits(self) -> list[Edit]:
        """The trace edits of this run's ablation (none without one), to rerun it as it was."""
        if self._edits or self.ablation is None:
            return list(self._edits)
        return ablation_edits(self.loaded_model(), self.input_ids, self.ablation)  # a pickled copy keeps none

    def head_output(self, layer: int, position: int) -> torch.Tensor:
        """``[head, d_head]``: each head's output at ``position`` (its slice of the attention output projection's
        input), as in this run (ablations included)."""
        from .lens import checked_position

        return self.point("z", layer)[checked_position(position, self.seq_len)]

    def point(self, name: str, layer: int):
        """One layer's recorded point (see tracing.py), without the batch dimension: ``z`` ``[seq, head, d_head]``,
        ``attn_out``/``mlp_out`` ``[seq, d_model]``, ``mlp_hidden`` ``[seq, d_mlp]``, ``qkv`` (``LayerStates``:
        query, key and value states), ``resid_pre``/``resid_post`` ``[seq, d_model]``. Kept ones are read; the
        others are rebuilt by rerunning block ``layer`` on its recorded input (the forward pass's own values)."""
        if name in ("resid_pre", "resid_post"):
            return self.resid[layer + (name == "resid_post")]
        kept = getattr(self, name, None) if name in CAPTURE_POINTS else None
        if kept is not None:
            return kept[layer]
        if name not in REBUILT_POINTS:
            raise OptLensError(f"Unknown point {name!r}: a capture has {', '.join(('resid_pre', 'resid_post') + REBUILT_POINTS)}.")
        at = Point(name, layer)
        run = trace_blocks(self.loaded_model(), self.resid[layer][None], self.block_calls, layer, record=[at],
                           edits=[e for e in self._edits if e.point.layer == layer], stop=at)
        return run[at].kept(self.seq_len, values=True) if name == "qkv" else run[at][0]

    def __getstate__(self) -> dict:
        # A pickled capture (Streamlit's cache_data) must not drag the model along.
        state = dict(self.__dict__)
        state.update(_model=None, block_calls=(), _edits=())
        return state

    def nbytes(self) -> int:
        tensors = [self.resid, self.next_logits, self.attn_out, self.mlp_out, self.z, self.mlp_hidden]
        if isinstance(self.patterns, StoredPatterns):  # recorded patterns count the calls they share
            tensors += list({id(t): t for call in self.block_calls for t in call.tensors()}.values())
        return self.patterns.nbytes() + sum(t.numel() * t.element_size() for t in tensors if t is not None)


def capture(
    lm,
    text: str,
    *,
    points: tuple[str, ...] = (),
    attention_prefix: int | None = None,
    ablate=(),
    ablate_with: str = "zero",
    ablate_mlps=(),
    ablate_neurons=(),
) -> Capture:
    """Tokenize ``text`` (truncating to the model's context) and capture one forward pass.

    ``ablate=[(layer, head), ...]``, ``ablate_mlps=[layer, ...]`` and ``ablate_neurons=[(layer, neuron), ...]``
    knock those parts out of the run (``ablate_with="zero"`` or ``"mean"``, see ablation.py); every field then
    describes the ablated run.

    ``attention_prefix=n`` keeps the attention among the first ``n`` tokens only: as attention is causal,
    exactly the patterns a run on those ``n`` tokens gives, for a fraction of the memory of a long prompt's.
    """
    tokenized = tokenize(lm.tokenizer, text, lm.arch.max_positions)
    return capture_ids(
        lm,
        tokenized.input_ids,
        text=tokenized.text,
        offsets=tokenized.offsets,
        truncated=tokenized.truncated,
        n_prompt_tokens=tokenized.n_prompt_tokens,
        points=points,
        attention_prefix=attention_prefix,
        ablate=ablate,
        ablate_with=ablate_with,
        ablate_mlps=ablate_mlps,
        ablate_neurons=ablate_neurons,
    )


def capture_ids(
    lm,
    input_ids: torch.Tensor,
    *,
    text: str | None = None,
    offsets: list[tuple[int, int]] | None = None,
    truncated: bool = False,
    n_prompt_tokens: int | None = None,
    points: tuple[str, ...] = (),
    attention_prefix: int | None = None,
    ablate=(),
    ablate_with: str = "zero",
    ablate_mlps=(),
    ablate_neurons=(),
) -> Capture:
    """Capture a forward pass on token ids (for synthetic inputs such as repeated random tokens)."""
    arch = lm.arch
    input_ids = _checked_ids(arch, input_ids, points, attention_prefix)
    knocked_out = ablation_spec(arch, ablate, ablate_mlps, ablate_with, ablate_neurons)
    seq = input_ids.shape[0]
    kept = seq if attention_prefix is None else min(seq, attention_prefix)  # tokens whose attention is kept
    edits = tuple(ablation_edits(lm, input_ids, knocked_out))  # mean ablation runs the unablated pass here
    buffers = _Buffers(lm, seq, kept, points)
    run = trace(lm, input_ids, record=buffers.points(), edits=edits, sink=buffers.sink)
    calls = tuple(buffers.calls)
    assert all(call is not None for call in calls), "a block was not called"
    return Capture(
        model_name=lm.name,
        text=text if text is not None else lm.tokenizer.decode(input_ids),
        input_ids=input_ids,
        tokens=display_tokens(lm.tokenizer, input_ids.tolist()),
        offsets=offsets if offsets is not None else [(0, 0)] * seq,
        truncated=truncated,
        n_prompt_tokens=n_prompt_tokens if n_prompt_tokens is not None else seq,
        patterns=StoredPatterns(buffers.stored) if buffers.stored is not None else RecordedPatterns(lm, buffers.resid, list(calls), kept),
        resid=buffers.resid,
        next_logits=run.output.logits[0, -1].float().clone(),  # [vocab]
        attn_out=buffers.extra.get("attn_out"),
        mlp_out=buffers.extra.get("mlp_out"),
        ablation=knocked_out,
        block_calls=calls,
        z=buffers.extra.get("z"),
        mlp_hidden=buffers.extra.get("mlp_hidden"),
        _model=weakref.ref(lm),
        _edits=edits,
    )


def _checked_ids(arch, input_ids, points, attention_prefix) -> torch.Tensor:
    """``[seq]`` long token ids, or a clear refusal of ids, points or a prefix the model cannot take."""
    unknown = sorted(set(points) - set(CAPTURE_POINTS))
    if unknown:
        raise OptLensError(f"Unknown capture points {unknown}: the known ones are {list(CAPTURE_POINTS)}.")
    input_ids = torch.as_tensor(input_ids)
    if input_ids.numel() and (input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool):
        raise OptLensError(f"Token ids must be whole numbers, not {input_ids.dtype}.")
    input_ids = input_ids.long().reshape(-1)  # [seq]
    seq = input_ids.shape[0]
    if seq == 0:
        raise OptLensError("There are no tokens to run.")
    if seq > arch.max_positions:
        raise OptLensError(f"{seq} tokens is more than this model's context of {arch.max_positions}.")
    if input_ids.min() < 0 or input_ids.max() >= arch.vocab_size:
        raise OptLensError(f"Token ids must lie in 0..{arch.vocab_size - 1}, this model's vocabulary.")
    if attention_prefix is not None and attention_prefix < 1:
        raise OptLensError(f"attention_prefix must be a positive number of tokens, not {attention_prefix}.")
    return input_ids


class _Buffers:
    """Where a capture's trace copies what it records: one preallocated tensor per kind, filled layer by layer."""

    def __init__(self, lm, seq: int, kept: int, points) -> None:
        arch = lm.arch
        self.n_layers, self.kept = arch.n_layers, kept
        self.resid = torch.empty(arch.n_layers + 1, seq, arch.d_model)  # [layer + 1, seq, d_model]
        widths = {"attn_out": (arch.d_model,), "mlp_out": (arch.d_model,), "z": (arch.n_heads, arch.d_head), "mlp_hidden": (arch.d_mlp,)}
        self.extra = {point: torch.empty(arch.n_layers, seq, *widths[point]) for point in points}
        self.calls: list[BlockCall | None] = [None] * arch.n_layers  # what the patterns are rebuilt from
        recorded = capture_path(lm.model) == RECORDED
        self.stored = None if recorded else _eager_attention_buffer(arch, kept)

    def points(self) -> list[Point]:
        names = ["call", "resid_post", *self.extra] + ([] if self.stored is None else ["pattern"])
        return [Point("resid_pre", 0)] + [Point(name, layer) for layer in range(self.n_layers) for name in names]

    def sink(self, point: Point, value) -> None:
        name, layer = point
        if name == "call":
            self.calls[layer] = value
        elif name == "resid_pre":
            _copy(self.resid, 0, value)
        elif name == "resid_post":
            _copy(self.resid, layer + 1, value)
        elif name == "pattern":
            _copy(self.stored, layer, value[:, :, : self.kept, : self.kept])
        else:
            _copy(self.extra[name], layer, value)


def _copy(target: torch.Tensor, row: int, value: torch.Tensor) -> None:
    assert value.numel() == target[row].numel(), f"expected one sequence, got {tuple(value.shape)}"
    target[row].copy_(value.reshape(target.shape[1:]))


def _eager_attention_buffer(arch, kept: int) -> torch.Tensor:
    full_bytes = arch.n_layers * arch.n_heads * kept * kept * 4
    dtype = torch.float32 if full_bytes <= FLOAT32_ATTENTION_BYTES else torch.float16
    return torch.empty(arch.n_layers, arch.n_heads, kept, kept, dtype=dtype)  # [layer, head, query, key]
