"""Run one forward pass and keep what the views need: the residual stream, the model's own next-token logits,
and what attention patterns are rebuilt from.

Hooks go on the modules the detected architecture names; they are registered for one forward pass and
removed in ``finally``. Where the model routes attention through transformers' interface, the capture keeps
each block's call (blocks.py), from which attention.py rebuilds a layer's query and key states when it is
read; where it does not, eager attention's returned patterns are stored. A model object is shared by every
student of a class, so captures on the same ``LoadedModel`` take its lock: each gets exactly the result it
would get alone. A ``Capture`` is never changed after it is built, so one cached capture can serve many
students.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from dataclasses import dataclass, field

import torch

from .ablation import Ablation, ablation_spec, install_ablation
from .attention import RECORDED, Patterns, RecordedPatterns, StoredPatterns, capture_path
from .blocks import BlockCall
from .errors import OptLensError
from .surgery import get_module, hooks
from .tokens import display_tokens, tokenize

logger = logging.getLogger(__name__)

# Eager capture (models whose attention bypasses transformers' interface) stores whole patterns: those of a
# long prompt as float16 (within 5e-4 of the model's float32 values) to bound memory.
FLOAT32_ATTENTION_BYTES = 64 * 2**20
CAPTURE_POINTS = ("attn_out", "mlp_out")


@dataclass(frozen=True, eq=False, repr=False)
class Capture:
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
    # A weak reference: a cached capture must not keep an evicted model's weights alive.
    _model: weakref.ref | None = field(default=None, repr=False)

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
        queries = torch.arange(self.attention_tokens)
        return self.patterns.rows(layer, queries, heads=slice(head, head + 1))[0]  # [query, key]

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
        from .lens import readout  # lens reads captures

        return readout(self.loaded_model(), self.resid[-1])  # [seq, vocab]

    def taken_on(self, lm) -> bool:
        """Whether this capture was taken on the loaded model object ``lm`` (which is still loaded)."""
        return self._model is not None and self._model() is lm

    def loaded_model(self):
        """The ``LoadedModel`` this capture was taken on, while it is still loaded."""
        lm = self._model() if self._model is not None else None
        if lm is None:
            raise OptLensError("This capture's model is no longer loaded; run capture() again to get logits.")
        return lm

    def __getstate__(self) -> dict:
        # A pickled capture (Streamlit's cache_data) must not drag the model along.
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def nbytes(self) -> int:
        tensors = (self.resid, self.next_logits, self.attn_out, self.mlp_out)
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
) -> Capture:
    """Tokenize ``text`` (truncating to the model's context) and capture one forward pass.

    ``ablate=[(layer, head), ...]`` and ``ablate_mlps=[layer, ...]`` knock those parts out of the run
    (``ablate_with="zero"`` or ``"mean"``, see ablation.py); every field then describes the ablated run.

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
) -> Capture:
    """Capture a forward pass on token ids (for synthetic inputs such as repeated random tokens)."""
    arch = lm.arch
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
    knocked_out = ablation_spec(arch, ablate, ablate_mlps, ablate_with)
    kept = seq if attention_prefix is None else min(seq, attention_prefix)  # tokens whose attention is kept
    model = lm.model
    recorded = capture_path(model) == RECORDED
    calls: list[BlockCall | None] = [None] * arch.n_layers  # what the patterns are rebuilt from
    stored = None if recorded else _eager_attention_buffer(arch, kept)

    resid = torch.empty(arch.n_layers + 1, seq, arch.d_model)  # [layer + 1, seq, d_model]
    extra = {point: torch.empty(arch.n_layers, seq, arch.d_model) for point in points}
    filled: set[tuple[str, int]] = set()
    owner = threading.get_ident()

    def mine() -> bool:
        # Defensive: only the capturing thread's own forward pass is recorded.
        return threading.get_ident() == owner

    def record(kind: str, layer: int, target: torch.Tensor, value: torch.Tensor) -> None:
        # OPT's fc2 sees [batch * seq, d]: accept any layout holding one sequence.
        assert value.numel() == target[layer].numel(), f"expected one sequence, got {tuple(value.shape)}"
        target[layer].copy_(value.reshape(target.shape[1:]))
        filled.add((kind, layer))

    def before_block(layer):
        def hook(module, args, kwargs):
            if not mine():
                return
            hidden, call = BlockCall.split(args, kwargs)
            if layer == 0:
                record("embed", 0, resid, hidden)
            calls[layer] = call

        return hook

    def after_block(layer):
        def hook(module, args, output):
            if mine():
                record("resid", layer + 1, resid, output[0] if isinstance(output, tuple) else output)

        return hook

    def after_attn(layer):
        def hook(module, args, output):
            if not mine():
                return
            if stored is not None:
                weights = output[1]  # [batch, head, query, key]
                if weights is None:
                    raise OptLensError("This model was loaded with neither opt_lens' attention nor eager attention, so it gives no patterns.")
                record("attention", layer, stored, weights[:, :, :kept, :kept])
            if "attn_out" in extra:
                record("attn_out", layer, extra["attn_out"], output[0])

        return hook

    def after_mlp(layer):
        def hook(module, args, output):
            if mine():
                record("mlp_out", layer, extra["mlp_out"], output)

        return hook

    with lm.lock, torch.inference_mode(), hooks() as hook_set:
        # First, outside the recording: mean ablation runs the unablated pass for its means, and the
        # recording hooks registered after these see the ablated values.
        install_ablation(lm, hook_set, input_ids, knocked_out)
        for layer in range(arch.n_layers):
            hook_set.forward_pre(get_module(model, arch.paths.block(layer)), before_block(layer))
            hook_set.forward(get_module(model, arch.paths.block(layer)), after_block(layer))
            if stored is not None or "attn_out" in extra:
                hook_set.forward(get_module(model, arch.paths.attn_of(layer)), after_attn(layer))
            if "mlp_out" in extra:
                hook_set.forward(get_module(model, arch.paths.mlp_out_of(layer)), after_mlp(layer))
        output = model(input_ids=input_ids[None], use_cache=False, **_last_logits_only(model))
        next_logits = output.logits[0, -1].float().clone()  # [vocab]

    expected = {("embed", 0)} | {("resid", i + 1) for i in range(arch.n_layers)}
    expected |= {(kind, i) for i in range(arch.n_layers) for kind in points}
    expected |= set() if stored is None else {("attention", i) for i in range(arch.n_layers)}
    assert filled == expected, f"hooks missed {sorted(expected - filled)}"
    assert all(call is not None for call in calls), "a block was not called"
    return Capture(
        model_name=lm.name,
        text=text if text is not None else lm.tokenizer.decode(input_ids),
        input_ids=input_ids,
        tokens=display_tokens(lm.tokenizer, input_ids.tolist()),
        offsets=offsets if offsets is not None else [(0, 0)] * seq,
        truncated=truncated,
        n_prompt_tokens=n_prompt_tokens if n_prompt_tokens is not None else seq,
        patterns=RecordedPatterns(lm, resid, calls, kept) if stored is None else StoredPatterns(stored),
        resid=resid,
        next_logits=next_logits,
        attn_out=extra.get("attn_out"),
        mlp_out=extra.get("mlp_out"),
        ablation=knocked_out,
        _model=weakref.ref(lm),
    )


def _eager_attention_buffer(arch, kept: int) -> torch.Tensor:
    full_bytes = arch.n_layers * arch.n_heads * kept * kept * 4
    dtype = torch.float32 if full_bytes <= FLOAT32_ATTENTION_BYTES else torch.float16
    return torch.empty(arch.n_layers, arch.n_heads, kept, kept, dtype=dtype)  # [layer, head, query, key]


def _last_logits_only(model) -> dict:
    """Ask for the last position's logits only where the model supports it: the rest are computed on demand."""
    supported = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if supported else {}
