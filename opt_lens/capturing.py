"""Run one forward pass and keep what the views need: attention patterns, the residual stream, logits.

Hooks go on the modules the detected architecture names; they are registered for one forward pass and
removed in ``finally``. A model object is shared by every student of a class, so captures on the same
``LoadedModel`` take its lock: each gets exactly the result it would get alone.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from dataclasses import dataclass, field

import torch

from .ablation import Ablation, ablation_spec, install_ablation
from .errors import OptLensError
from .surgery import get_module, hooks
from .tokens import display_tokens, tokenize

logger = logging.getLogger(__name__)

# Attention of a long prompt is stored as float16 (within 5e-4 of the model's float32 values) so that a
# 1024-token GPT-2 capture stays under 400 MB; shorter prompts keep the model's own float32 numbers.
FLOAT32_ATTENTION_BYTES = 64 * 2**20
CAPTURE_POINTS = ("attn_out", "mlp_out")


@dataclass(eq=False, repr=False)
class Capture:
    model_name: str
    text: str
    input_ids: torch.Tensor  # [seq]
    tokens: list[str]  # readable display strings, one per token
    offsets: list[tuple[int, int]]  # character span of each token in `text`
    truncated: bool
    n_prompt_tokens: int  # before truncation
    attention: torch.Tensor  # [layer, head, query, key] over the first `attention_tokens` tokens
    resid: torch.Tensor  # [layer + 1, seq, d_model]: embeddings, then the output of each block
    final_hidden: torch.Tensor  # [seq, embed_dim]: what the unembedding reads (after final norm / project_out)
    next_logits: torch.Tensor  # [vocab]: the model's own logits at the last position
    attn_out: torch.Tensor | None = None  # [layer, seq, d_model] when captured
    mlp_out: torch.Tensor | None = None  # [layer, seq, d_model] when captured
    ablation: Ablation | None = None  # what was knocked out of this run (every field describes it)
    # A weak reference: a cached capture must not keep an evicted model's weights alive.
    _unembed: weakref.ref | None = field(default=None, repr=False)
    _logits: torch.Tensor | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Capture({self.model_name!r}, {self.seq_len} tokens, truncated={self.truncated})"

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[0]

    @property
    def attention_tokens(self) -> int:
        """How many leading tokens ``attention`` covers: all, unless captured with an ``attention_prefix``."""
        return self.attention.shape[-1]

    def pattern(self, layer: int, head: int) -> torch.Tensor:
        """``[query, key]`` float32: one head's attention pattern over the tokens ``attention`` covers."""
        return self.attention[layer, head].float()  # [query, key]

    @property
    def logits(self) -> torch.Tensor:
        """``[seq, vocab]`` logits, computed on first use from ``final_hidden`` by the model's own unembedding.

        Materialising them costs 200 MB for 1024 GPT-2 tokens, which most views never need.
        """
        if self._logits is None:
            unembed = self._unembed() if self._unembed is not None else None
            if unembed is None:
                raise OptLensError("This capture's model is no longer loaded; run capture() again to get logits.")
            with torch.inference_mode():
                self._logits = unembed(self.final_hidden)  # [seq, vocab]
        return self._logits

    def __getstate__(self) -> dict:
        # A pickled capture (Streamlit's cache_data) must not drag the unembedding weights along.
        state = dict(self.__dict__)
        state["_unembed"] = None
        return state

    def nbytes(self) -> int:
        tensors = (self.attention, self.resid, self.final_hidden, self.next_logits, self.attn_out, self.mlp_out, self._logits)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def capture(
    lm,
    text: str,
    *,
    points: tuple[str, ...] = (),
    attention_dtype: torch.dtype | None = None,
    attention_prefix: int | None = None,
    ablate=(),
    ablate_with: str = "zero",
    ablate_mlps=(),
) -> Capture:
    """Tokenize ``text`` (truncating to the model's context) and capture one forward pass.

    ``attention_prefix=n`` keeps the attention among the first ``n`` tokens only: as attention is causal,
    exactly the patterns a run on those ``n`` tokens gives, at a fraction of the memory of a long prompt's.

    ``ablate=[(layer, head), ...]`` and ``ablate_mlps=[layer, ...]`` knock those parts out of the run
    (``ablate_with="zero"`` or ``"mean"``, see ablation.py); every field then describes the ablated run.
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
        attention_dtype=attention_dtype,
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
    attention_dtype: torch.dtype | None = None,
    attention_prefix: int | None = None,
    ablate=(),
    ablate_with: str = "zero",
    ablate_mlps=(),
) -> Capture:
    """Capture a forward pass on token ids (for synthetic inputs such as repeated random tokens)."""
    arch = lm.arch
    unknown = set(points) - set(CAPTURE_POINTS)
    assert not unknown, f"unknown capture points {sorted(unknown)}; known: {CAPTURE_POINTS}"
    input_ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)  # [seq]
    seq = input_ids.shape[0]
    if seq == 0:
        raise OptLensError("There are no tokens to run.")
    if seq > arch.max_positions:
        raise OptLensError(f"{seq} tokens is more than this model's context of {arch.max_positions}.")
    assert attention_prefix is None or attention_prefix > 0, f"attention_prefix must be positive, not {attention_prefix}"
    knocked_out = ablation_spec(arch, ablate, ablate_mlps, ablate_with)
    kept = seq if attention_prefix is None else min(seq, attention_prefix)  # tokens whose attention is stored
    if attention_dtype is None:
        full_bytes = arch.n_layers * arch.n_heads * kept * kept * 4
        attention_dtype = torch.float32 if full_bytes <= FLOAT32_ATTENTION_BYTES else torch.float16

    attention = torch.empty(arch.n_layers, arch.n_heads, kept, kept, dtype=attention_dtype)  # [layer, head, query, key]
    resid = torch.empty(arch.n_layers + 1, seq, arch.d_model)  # [layer + 1, seq, d_model]
    extra = {point: torch.empty(arch.n_layers, seq, arch.d_model) for point in points}
    final_hidden: list[torch.Tensor] = []
    filled: set[tuple[str, int]] = set()
    owner = threading.get_ident()

    def mine() -> bool:
        # Defensive: only the capturing thread's own forward pass is recorded.
        return threading.get_ident() == owner

    def record(kind: str, layer: int, target: torch.Tensor, value: torch.Tensor) -> None:
        assert value.shape[0] == 1, f"expected a batch of one, got {tuple(value.shape)}"
        target[layer].copy_(value[0])
        filled.add((kind, layer))

    def before_first_block(module, args, kwargs):
        if mine():
            record("embed", 0, resid, args[0] if args else kwargs["hidden_states"])

    def after_block(layer):
        def hook(module, args, output):
            if mine():
                record("resid", layer + 1, resid, output[0] if isinstance(output, tuple) else output)

        return hook

    def after_attn(layer):
        def hook(module, args, output):
            if not mine():
                return
            weights = output[1]  # [batch, head, query, key]
            if weights is None:
                raise OptLensError("This model was not loaded with eager attention, so it returns no patterns.")
            record("attention", layer, attention, weights[:, :, :kept, :kept])
            if "attn_out" in extra:
                record("attn_out", layer, extra["attn_out"], output[0])

        return hook

    def after_mlp(layer):
        def hook(module, args, output):
            if mine():
                record("mlp_out", layer, extra["mlp_out"], output)

        return hook

    def before_unembed(module, args, output):
        if mine():
            final_hidden.append((output[0] if isinstance(output, tuple) else output)[0].clone())  # [seq, embed_dim]

    model = lm.model
    with lm.lock, torch.inference_mode(), hooks() as hook_set:
        install_ablation(lm, hook_set, input_ids, knocked_out)  # first: the recording hooks see the ablated run
        hook_set.forward_pre(get_module(model, arch.paths.block(0)), before_first_block)
        for layer in range(arch.n_layers):
            hook_set.forward(get_module(model, arch.paths.block(layer)), after_block(layer))
            hook_set.forward(get_module(model, arch.paths.attn_of(layer)), after_attn(layer))
            if "mlp_out" in extra:
                hook_set.forward(get_module(model, arch.paths.mlp_out_of(layer)), after_mlp(layer))
        # The last module before the unembedding (final norm, OPT-350m's project_out, or the last block) sees
        # every position, while the LM head is asked for the last position only.
        feeds_unembed = arch.paths.readout()[:-1] or (arch.paths.block(arch.n_layers - 1),)
        hook_set.forward(get_module(model, feeds_unembed[-1]), before_unembed)
        output = model(input_ids=input_ids[None], use_cache=False, **_last_logits_only(model))
        next_logits = output.logits[0, -1].float().clone()  # [vocab]

    expected = {("embed", 0)} | {(kind, i) for i in range(arch.n_layers) for kind in ("attention", *points)}
    expected |= {("resid", i + 1) for i in range(arch.n_layers)}
    assert filled == expected and len(final_hidden) == 1, f"hooks missed {sorted(expected - filled)}"
    return Capture(
        model_name=lm.name,
        text=text if text is not None else lm.tokenizer.decode(input_ids),
        input_ids=input_ids,
        tokens=display_tokens(lm.tokenizer, input_ids.tolist()),
        offsets=offsets if offsets is not None else [(0, 0)] * seq,
        truncated=truncated,
        n_prompt_tokens=n_prompt_tokens if n_prompt_tokens is not None else seq,
        attention=attention,
        resid=resid,
        final_hidden=final_hidden[0],
        next_logits=next_logits,
        attn_out=extra.get("attn_out"),
        mlp_out=extra.get("mlp_out"),
        ablation=knocked_out,
        _unembed=weakref.ref(get_module(model, arch.paths.unembed)),
    )


def _last_logits_only(model) -> dict:
    """Ask for the last position's logits only where the model supports it: the rest are computed on demand."""
    supported = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if supported else {}
