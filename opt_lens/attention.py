"""Attention patterns at the cost of a plain forward pass: the query and key states transformers' attention
interface receives, rebuilt one layer at a time.

Models whose attention goes through ``transformers.AttentionInterface`` load with ``IMPLEMENTATION``, which is
transformers' own sdpa function (the model's output is computed by the same call a plain sdpa forward makes)
plus, while a listener is active in the current thread (``recording``: a trace's ``qkv`` point, or a
``Recorder``), the query, key and value states it receives: after rotary embeddings, with the model's own
scaling and mask. ``load`` registers it with transformers (``register``); importing this module does not. A pattern is ``softmax(query @ key.T *
scaling + mask)``, which is what transformers' eager attention computes; it equals eager's pattern within
1e-5 (float32 rounding of a matmul done in other blocks), not bit for bit.

A capture keeps no query and key states: ``[seq, d_model]`` twice per layer would double what it holds
(233 MB for OPT-125m at 2048 tokens). It keeps each block's input (the residual stream, which it holds
anyway) and the rest of each block's call, and ``RecordedPatterns`` rebuilds a layer's states on demand by
running that block again on the same input, up to its attention call (a ``trace_blocks``): the same modules on the same
values, so the states are those of the forward pass itself (the tests check they are equal bit for bit).
The last few layers rebuilt stay in a small bounded cache.

Models whose attention does not go through the interface (GPT-Neo) load with eager attention and their
captures store the patterns the model returns (``StoredPatterns``).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from .blocks import BlockCall
from .errors import OptLensError
from .surgery import StopForward

IMPLEMENTATION = "opt_lens_sdpa"
RECORDED = "sdpa forward; query and key states recorded per layer when read"
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


@dataclass(frozen=True)
class LayerStates:
    """One layer's query, key and value states as its attention function received them (after rotary)."""

    query: torch.Tensor  # [head, seq, d_head]
    key: torch.Tensor  # [kv_head, seq, d_head]
    scaling: float
    mask: torch.Tensor | None  # [1 or head, seq, seq] bool or additive float; None = plain causal
    value: torch.Tensor | None = None  # [kv_head, seq, d_head]

    def rows(self, queries: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        """``[head, query, key]`` float32: the attention rows of the query positions ``queries`` over every key."""
        query = self.query[heads, queries]  # [head, query, d_head]
        group = self.query.shape[0] // self.key.shape[0]  # query heads per key head (grouped-query attention)
        head_index = torch.arange(self.query.shape[0])[heads] // group  # [head]
        key = self.key[head_index]  # [head, key, d_head]
        scores = torch.matmul(query, key.transpose(-1, -2)).mul_(self.scaling)  # [head, query, key]
        if self.mask is None:
            future = queries[:, None] < torch.arange(key.shape[1])[None, :]  # [query, key]
            scores.masked_fill_(future, float("-inf"))
        elif self.mask.dtype == torch.bool:
            scores.masked_fill_(~self.mask[:, queries], float("-inf"))
        else:
            scores.add_(self.mask[:, queries])
        return torch.softmax(scores, dim=-1)  # [head, query, key]

    def kept(self, n_tokens: int, *, values: bool = False) -> LayerStates:
        """The states of the first ``n_tokens`` tokens, owning their storage (see ``_own``); values if asked."""
        mask = None if self.mask is None else self.mask[:, :n_tokens, :n_tokens]
        value = _own(self.value[:, :n_tokens]) if values and self.value is not None else None
        return LayerStates(_own(self.query[:, :n_tokens]), _own(self.key[:, :n_tokens]), self.scaling, mask, value)


def _layer_states(query, key, value, attention_mask, scaling, kwargs) -> LayerStates:
    """The states an attention call received (views into the model's tensors), checked to be rebuildable."""
    assert query.shape[0] == 1, f"expected a batch of one, got {tuple(query.shape)}"
    unsupported = [name for name in _UNSUPPORTED_KWARGS if kwargs.get(name) is not None]
    if unsupported:
        raise OptLensError(f"This model's attention adds {', '.join(unsupported)}, which pattern capture cannot rebuild.")
    if scaling is None:  # sdpa's default, as the eager functions use
        scaling = query.shape[-1] ** -0.5
    mask = None if attention_mask is None else attention_mask[0]
    return LayerStates(query[0], key[0], float(scaling), mask, value[0])


class Recorder:
    """Query and key states of one forward pass, by layer, for the first ``kept`` tokens (a callback for
    ``recording``). With ``stop=True`` the forward pass ends (``StopForward``) once a layer is recorded."""

    def __init__(self, layer_of: dict[nn.Module, int], kept: int, *, stop: bool = False) -> None:
        self._layer_of = layer_of  # attention module -> layer index
        self._kept = kept
        self._stop = stop
        self.layers: dict[int, LayerStates] = {}

    def __call__(self, module: nn.Module, states: LayerStates) -> None:
        layer = self._layer_of.get(module)
        assert layer is not None, f"attention called from a module the architecture does not name: {type(module).__name__}"
        self.layers[layer] = states.kept(self._kept)
        if self._stop:
            raise StopForward


def _own(states: torch.Tensor) -> torch.Tensor:
    """``states`` if they are all their storage holds (OPT's, Llama's), else a copy: a view into GPT-2's fused
    query-key-value projection, or into a longer prompt's states, would keep the rest of it alive."""
    whole = states.untyped_storage().nbytes() == states.numel() * states.element_size()
    return states if whole else states.clone()


Listener = Callable[[nn.Module, LayerStates], None]
_active: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("opt_lens_recorder", default=None)


@contextlib.contextmanager
def recording(listener: Listener) -> Iterator[Listener]:
    """Pass the attention calls of forward passes run by this thread (and only this one) in this block to
    ``listener(module, states)``."""
    token = _active.set(listener)
    try:
        yield listener
    finally:
        _active.reset(token)


def recording_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    listener = _active.get()
    if listener is not None:
        listener(module, _layer_states(query, key, value, attention_mask, scaling, kwargs))
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)


def register() -> None:
    """Make ``IMPLEMENTATION`` known to transformers (``load`` calls this before building a model; idempotent)."""
    AttentionInterface.register(IMPLEMENTATION, recording_attention)
    # Masks are built as for sdpa: none at all for one unpadded sequence, so sdpa runs its causal kernel.
    if IMPLEMENTATION not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


# Rebuilt layers kept per capture: at least one (a head switch in the same layer rebuilds nothing), more
# while they fit in this many bytes (all of them for a short prompt).
STATES_CACHE_BYTES = 16 * 2**20


class RecordedPatterns:
    """Patterns from query and key states, rebuilt per layer by rerunning the layer's block up to its attention
    call on the block input the capture recorded (a ``trace_blocks`` run).

    Needs the model that was captured while it is loaded. A pickled copy carries every layer's states
    instead (rebuilt when it is pickled), so it no longer needs the model.
    """

    def __init__(self, lm, block_inputs: torch.Tensor, calls: list[BlockCall], n_tokens: int) -> None:
        assert len(calls) == lm.arch.n_layers and block_inputs.shape[0] >= lm.arch.n_layers
        self._model = weakref.ref(lm)
        self._paths = lm.arch.paths
        self._inputs = block_inputs  # [layer (+ 1), seq, d_model]: block l's input at row l
        self._calls = calls
        self.n_layers, self.n_heads, self.n_tokens = lm.arch.n_layers, lm.arch.n_heads, n_tokens
        # Key heads never outnumber query heads, so this bounds one layer's states.
        self._layer_bytes = 2 * n_tokens * lm.arch.n_heads * lm.arch.d_head * 4
        self._capacity = min(self.n_layers, max(1, STATES_CACHE_BYTES // self._layer_bytes))
        self._cache: OrderedDict[int, LayerStates] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pickled: list[LayerStates] | None = None

    def layer(self, layer: int) -> LayerStates:
        if self._pickled is not None:
            return self._pickled[layer]
        with self._cache_lock:
            if layer in self._cache:
                self._cache.move_to_end(layer)
                return self._cache[layer]
            if len(self._cache) >= self._capacity:  # make room first: never the cache's bound plus one layer
                self._cache.popitem(last=False)
        states = self._rebuild(layer)  # outside the cache's lock: other layers stay readable meanwhile
        with self._cache_lock:
            self._cache[layer] = states
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return states

    def rows(self, layer: int, queries: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        return self.layer(layer).rows(queries, heads)  # [head, query, key]

    def _rebuild(self, layer: int) -> LayerStates:
        from .tracing import Point, trace_blocks  # tracing runs models; it imports this module

        lm = self._model()
        if lm is None:
            raise OptLensError("This capture's model is no longer loaded; run capture() again to see its attention.")
        point = Point("qkv", layer)
        run = trace_blocks(lm, self._inputs[layer][None], self._calls, layer, record=[point], stop=point)
        return run[point].kept(self.n_tokens)

    def nbytes(self) -> int:
        """What the patterns add to a capture at most: the cached layers' states and the recorded calls'
        tensors (the block inputs are the capture's residual stream, counted there)."""
        call_tensors = {t.data_ptr(): t for call in self._calls for t in call.tensors()}
        return self._capacity * self._layer_bytes + sum(t.numel() * t.element_size() for t in call_tensors.values())

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pickled"] = [self.layer(layer) for layer in range(self.n_layers)]
        state.update(_model=None, _calls=None, _cache=OrderedDict(), _cache_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache_lock=threading.Lock())


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

    def layer(self, layer: int) -> StoredLayer:
        return StoredLayer(self._attention[layer])

    def rows(self, layer: int, queries: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        return self.layer(layer).rows(queries, heads)  # [head, query, key]

    def nbytes(self) -> int:
        return self._attention.numel() * self._attention.element_size()


@dataclass(frozen=True)
class StoredLayer:
    attention: torch.Tensor  # [head, query, key]

    def rows(self, queries: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        return self.attention[heads][:, queries].float()  # [head, query, key]


Patterns = RecordedPatterns | StoredPatterns
LayerPatterns = LayerStates | StoredLayer  # one layer's patterns: ``.rows(queries, heads)``


# Bytes of one block of [head, row, key] float32 rows: rebuilding and scoring a block needs about four such
# tensors at once, so scores and matches stay within 100 MB of extra memory at any length.
ROW_BLOCK_BYTES = 8 * 2**20


def row_blocks(n_rows: int, n_heads: int, n_keys: int) -> Iterator[slice]:
    """Consecutive blocks of ``n_rows`` attention rows of at most ``ROW_BLOCK_BYTES`` each."""
    size = max(1, ROW_BLOCK_BYTES // (n_heads * n_keys * 4))
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))
