"""Attention patterns at the cost of a plain forward pass: record what transformers' attention interface receives.

Models whose attention goes through ``transformers.AttentionInterface`` load with ``IMPLEMENTATION``, which is
transformers' own sdpa function (the model's output is computed by the same call a plain sdpa forward makes)
plus, while a capture in the current thread has a ``Recorder`` active, a copy of the query and key states it
receives: after rotary embeddings, with the model's own scaling and mask. A pattern is rebuilt on demand as
``softmax(query @ key.T * scaling + mask)``, which is what transformers' eager attention computes; it equals
eager's pattern within 1e-5 (float32 rounding of a matmul done in other blocks), not bit for bit.

Models whose attention does not go through the interface (GPT-Neo) load with eager attention and their
captures store the patterns the model returns (``StoredPatterns``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from .errors import OptLensError

IMPLEMENTATION = "opt_lens_sdpa"
RECORDED = "recorded query and key states (sdpa forward)"
EAGER = "eager attention, patterns stored"

# Softmax terms the interface can pass that a pattern rebuilt from query, key and mask would not include.
_UNSUPPORTED_KWARGS = ("position_bias", "softcap", "s_aux", "sinks")


def implementation_for(config: PretrainedConfig) -> str:
    """The attention implementation to load a model with: the recording one where the model routes its
    attention through transformers' interface, eager (which returns patterns) where it does not."""
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    return IMPLEMENTATION if model_class is not None and model_class.is_backend_compatible() else "eager"


def capture_path(model_or_config) -> str:
    """How a capture gets its patterns (``RECORDED`` or ``EAGER``): for a model, from the implementation it was
    loaded with; for a bare config, from the one ``opt_lens.load`` would choose."""
    if isinstance(model_or_config, PretrainedConfig):
        return RECORDED if implementation_for(model_or_config) == IMPLEMENTATION else EAGER
    return RECORDED if model_or_config.config._attn_implementation == IMPLEMENTATION else EAGER


@dataclass
class _Layer:
    query: torch.Tensor  # [head, seq, d_head]
    key: torch.Tensor  # [kv_head, seq, d_head]
    scaling: float
    mask: torch.Tensor | None  # [1 or head, seq, seq] bool or additive float; None = plain causal


class Recorder:
    """Query and key states of one forward pass, by layer; filled by ``recording_attention``."""

    def __init__(self, layer_of: dict[nn.Module, int], kept: int) -> None:
        self._layer_of = layer_of  # attention module -> layer index
        self._kept = kept  # leading tokens whose states are kept
        self.layers: dict[int, _Layer] = {}

    def record(self, module: nn.Module, query, key, attention_mask, scaling, kwargs) -> None:
        assert query.shape[0] == 1, f"expected a batch of one, got {tuple(query.shape)}"
        layer = self._layer_of.get(module)
        assert layer is not None, f"attention called from a module the architecture does not name: {type(module).__name__}"
        unsupported = [name for name in _UNSUPPORTED_KWARGS if kwargs.get(name) is not None]
        if unsupported:
            raise OptLensError(f"This model's attention adds {', '.join(unsupported)}, which pattern capture cannot rebuild.")
        if scaling is None:  # sdpa's default, as the eager functions use
            scaling = query.shape[-1] ** -0.5
        kept = self._kept
        mask = None if attention_mask is None else attention_mask[0, :, :kept, :kept]
        self.layers[layer] = _Layer(_own(query[0, :, :kept]), _own(key[0, :, :kept]), float(scaling), mask)


def _own(states: torch.Tensor) -> torch.Tensor:
    """``states`` if they are all their storage holds (OPT's, Llama's), else a copy: a view into GPT-2's fused
    query-key-value projection, or into a longer prompt's states, would keep the rest of it alive."""
    whole = states.untyped_storage().nbytes() == states.numel() * states.element_size()
    return states if whole else states.clone()


_active: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("opt_lens_recorder", default=None)


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Record the attention calls of forward passes run by this thread (and only this one) in this block."""
    token = _active.set(recorder)
    try:
        yield recorder
    finally:
        _active.reset(token)


def recording_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    recorder = _active.get()
    if recorder is not None:
        recorder.record(module, query, key, attention_mask, scaling, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)


AttentionInterface.register(IMPLEMENTATION, recording_attention)
# Masks are built as for sdpa: none at all for one unpadded sequence, so sdpa runs its causal kernel.
if IMPLEMENTATION not in ALL_MASK_ATTENTION_FUNCTIONS:
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


class RecordedPatterns:
    """Patterns rebuilt on demand from recorded query and key states: ``softmax(q k^T * scaling + mask)``."""

    def __init__(self, recorder: Recorder, n_layers: int) -> None:
        assert sorted(recorder.layers) == list(range(n_layers)), f"recorded layers {sorted(recorder.layers)}"
        self._layers = [recorder.layers[layer] for layer in range(n_layers)]

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    @property
    def n_heads(self) -> int:
        return self._layers[0].query.shape[0]

    @property
    def n_tokens(self) -> int:
        return self._layers[0].query.shape[1]

    def rows(self, layer: int, queries: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        """``[head, query, key]`` float32: the attention rows of the query positions ``queries`` over every key."""
        states = self._layers[layer]
        query = states.query[heads, queries]  # [head, query, d_head]
        group = states.query.shape[0] // states.key.shape[0]  # query heads per key head (grouped-query attention)
        head_index = torch.arange(states.query.shape[0])[heads] // group  # [head]
        key = states.key[head_index]  # [head, key, d_head]
        scores = torch.matmul(query, key.transpose(-1, -2)).mul_(states.scaling)  # [head, query, key]
        if states.mask is None:
            future = queries[:, None] < torch.arange(key.shape[1])[None, :]  # [query, key]
            scores.masked_fill_(future, float("-inf"))
        elif states.mask.dtype == torch.bool:
            scores.masked_fill_(~states.mask[:, queries], float("-inf"))
        else:
            scores.add_(states.mask[:, queries])
        return torch.softmax(scores, dim=-1)  # [head, query, key]

    def nbytes(self) -> int:
        # Every layer's mask may be a view of one tensor the model built: count it once.
        tensors = {t.data_ptr(): t for layer in self._layers for t in (layer.query, layer.key, layer.mask) if t is not None}
        return sum(t.numel() * t.element_size() for t in tensors.values())


class StoredPatterns:
    """Patterns stored whole ``[layer, head, query, key]`` (eager capture, or hand-made ones in tests)."""

    def __init__(self, attention: torch.Tensor) -> None:
        assert attention.dim() == 4, f"expected [layer, head, query, key], got {tuple(attention.shape)}"
        self._attention = attention  # [layer, head, query, key]

    @property
    def n_layers(self) -> int:
        return self._attention.shape[0]

    @property
    def n_heads(self) -> int:
        return self._attention.shape[1]

    @property
    def n_tokens(self) -> int:
        return self._attention.shape[-1]

    def rows(self, layer: int, queries: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        return self._attention[layer, heads][:, queries].float()  # [head, query, key]

    def nbytes(self) -> int:
        return self._attention.numel() * self._attention.element_size()


Patterns = RecordedPatterns | StoredPatterns


# Bytes of one block of [head, row, key] float32 rows: rebuilding and scoring a block needs about four such
# tensors at once, so scores and matches stay within 100 MB of extra memory at any length.
ROW_BLOCK_BYTES = 8 * 2**20


def row_blocks(n_rows: int, n_heads: int, n_keys: int) -> Iterator[slice]:
    """Consecutive blocks of ``n_rows`` attention rows of at most ``ROW_BLOCK_BYTES`` each."""
    size = max(1, ROW_BLOCK_BYTES // (n_heads * n_keys * 4))
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))
