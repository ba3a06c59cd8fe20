"""Let the model write: continue a prompt token by token, keeping the distribution each token came from.

Each step is one token's forward pass on the key/value cache of the steps before it. Temperature 0 takes
the most likely token (exactly transformers' ``generate(do_sample=False)``); a positive temperature samples
with its own ``torch.Generator`` seeded from ``seed``, so a run is reproducible and never touches the global
random state other students' runs share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .tracing import trace
from .errors import OptLensError
from .lens import Prediction
from .tokens import Tokenized, display_tokens, tokenize

MAX_NEW_TOKENS = 256
MAX_SEED = 2**32 - 1
N_ALTERNATIVES = 10  # top alternatives kept per step: what a bar chart of "what else it could have said" shows

StopReason = Literal["max_new_tokens", "end_of_text", "context_full"]


@dataclass(frozen=True)
class Step:
    """One generated token and the distribution it was chosen from (see ``generate`` for which one)."""

    token_id: int
    token: str  # readable display form
    probability: float  # of this token, in the distribution it was chosen from
    rank: int  # 1 for that distribution's most likely token
    model_probability: float  # of this token, in the model's own softmax (temperature 1, every token)
    alternatives: list[Prediction]  # that distribution's most likely tokens, most likely first; logits are the model's


@dataclass(frozen=True, eq=False)
class Generation:
    """A prompt, what the model wrote after it step by step, why it stopped, and the settings that made it."""

    model_name: str
    prompt: Tokenized  # the prompt as the model saw it (cut to the model's context)
    token_ids: torch.Tensor  # [new]: the generated tokens, an end-of-text token included
    tokens: list[str]  # readable display form of each new token
    text: str  # the continuation as text, without special tokens such as end-of-text
    steps: list[Step]  # one per new token
    stop_reason: StopReason
    temperature: float
    top_k: int | None
    seed: int

    @property
    def context_full(self) -> bool:
        return self.stop_reason == "context_full"


def generate(
    lm,
    text: str,
    *,
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Generation:
    """Continue ``text`` by up to ``max_new_tokens`` tokens, stopping early at end-of-text or a full context.

    The prompt is tokenized as ``capture`` does, so the views of a prompt and of its continuation agree.
    ``Step.probability`` and ``Step.alternatives`` report the distribution each token was chosen from:
    ``softmax(logits / temperature)`` over the ``top_k`` highest logits (all tokens if ``top_k`` is None),
    renormalised. A positive temperature samples from exactly that distribution; temperature 0 takes its most
    likely token and reports it at temperature 1. Logits are the model's own: no repetition penalty or other
    processors from its generation config are applied. ``progress(written, max_new_tokens)`` follows each token.
    """
    _check_settings(max_new_tokens, temperature, top_k, seed)
    prompt = tokenize(lm.tokenizer, text, lm.arch.max_positions)
    room = lm.arch.max_positions - prompt.seq_len
    end_ids = _end_of_text_ids(lm)
    generator = torch.Generator().manual_seed(seed)
    new_ids: list[int] = []
    steps: list[Step] = []
    stop_reason: StopReason = "max_new_tokens"
    next_input, cache = prompt.input_ids[None], None  # [1, prompt]
    with torch.inference_mode():
        while len(new_ids) < max_new_tokens:
            if len(new_ids) == room:
                stop_reason = "context_full"
                break
            # Each step is its own trace, so the lock is taken per step: a long generation only delays another
            # student's capture by one token's forward. Nothing is shared between steps but the weights; the
            # key/value cache belongs to this call.
            output = trace(lm, next_input, use_cache=True, cache=cache).output
            cache = output.cache
            logits = output.logits[0, -1].float()  # [vocab]
            step = _choose(lm, logits, temperature, top_k, generator)
            new_ids.append(step.token_id)
            steps.append(step)
            if progress is not None:
                progress(len(new_ids), max_new_tokens)
            if step.token_id in end_ids:
                stop_reason = "end_of_text"
                break
            next_input = torch.tensor([[step.token_id]])  # [1, 1]
    return Generation(
        model_name=lm.name,
        prompt=prompt,
        token_ids=torch.tensor(new_ids, dtype=torch.long),
        tokens=[step.token for step in steps],
        text=lm.tokenizer.decode(new_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        steps=steps,
        stop_reason=stop_reason,
        temperature=float(temperature),
        top_k=top_k,
        seed=seed,
    )


def sampling_distribution(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """``[vocab]`` probabilities a token is chosen from: temperature-scaled softmax over the top-k logits.

    Temperature 0 scales as 1 (greedy takes the most likely token, whatever the scale). Ties with the k-th
    logit stay in, as in transformers' top-k.
    """
    scale = temperature if temperature > 0 else 1.0
    # Subtracting the maximum first keeps a tiny temperature from overflowing: every scaled logit is <= 0.
    scaled = (logits - logits.max()) / scale  # [vocab]
    if top_k is not None and top_k < logits.shape[0]:
        kth = torch.topk(logits, top_k).values[-1]
        scaled = scaled.masked_fill(logits < kth, -math.inf)  # [vocab]
    return torch.softmax(scaled, dim=-1)  # [vocab]


def _choose(lm, logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> Step:
    probs = sampling_distribution(logits, temperature, top_k)  # [vocab]
    if temperature > 0:
        token_id = _draw(probs, generator)
    else:
        token_id = int(torch.argmax(logits))  # transformers' greedy choice, first index on ties
    top = torch.topk(probs, min(N_ALTERNATIVES, probs.shape[0]))
    top_ids = top.indices.tolist()
    alternatives = [
        Prediction(rank=i + 1, token=token, token_id=alt_id, probability=p, logit=logits[alt_id].item())
        for i, (token, alt_id, p) in enumerate(zip(display_tokens(lm.tokenizer, top_ids), top_ids, top.values.tolist()))
    ]
    probability = probs[token_id].item()
    return Step(
        token_id=token_id,
        token=display_tokens(lm.tokenizer, [token_id])[0],
        probability=probability,
        rank=1 + int((probs > probability).sum()),
        model_probability=torch.softmax(logits, dim=-1)[token_id].item(),
        alternatives=alternatives,
    )


def _draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token drawn from ``probs`` by inverting its cumulative sum: 15 times faster than torch.multinomial for
    one draw from 50k tokens. A token of probability 0 adds nothing to the sum, so it is never the one found."""
    cumulative = torch.cumsum(probs.double(), dim=0)  # [vocab]
    target = torch.rand((), generator=generator, dtype=torch.float64) * cumulative[-1]
    return int(torch.searchsorted(cumulative, target, right=True).clamp(max=probs.shape[0] - 1))


def _end_of_text_ids(lm) -> set[int]:
    """The ids that end a text, as transformers' generate reads them from the model's generation config."""
    ids = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        return set()
    return {ids} if isinstance(ids, int) else set(ids)


def _check_settings(max_new_tokens, temperature, top_k, seed) -> None:
    if not _is_int(max_new_tokens) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise OptLensError(f"The number of new tokens must be a whole number from 1 to {MAX_NEW_TOKENS}.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise OptLensError("The temperature must be a number: 0 for the most likely token, higher for more variety.")
    if temperature < 0:
        raise OptLensError("The temperature cannot be negative: use 0 for the most likely token.")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise OptLensError("Top-k must be a whole number of at least 1, or None to keep every token.")
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise OptLensError(f"The seed must be a whole number from 0 to {MAX_SEED}.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
