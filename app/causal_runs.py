"""The Cause and effect page's interventions, each run once per input and shared by every student.

Ablated captures go into the shared capture cache (bounded by bytes like any capture); sweeps and patching
maps are small tensors kept in their own cache. A long run shows a progress bar while it builds; a cache hit
draws nothing, so changing a view setting never reruns the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import streamlit as st
import torch

import opt_lens
from app import causal_views as views
from app import jobs
from app.caches import BudgetCache, cached_capture, server_wide, shared_capture, shared_model, shared_result

RESULT_BUDGET_BYTES = 64 * 2**20  # maps are [layers, heads] or [layers + 1, tokens] floats: thousands fit
# A sweep or patching map costs about (variants x prompt tokens) token-passes through a block stack. Up to GPT-2's
# 144 heads on 128 tokens it starts at once; a larger one waits for a button, so nobody starts a minute-long
# run (holding the shared model between its steps) by typing a long prompt.
AUTO_RUN_TOKENS = 144 * 128


@server_wide
def result_cache() -> BudgetCache:
    return BudgetCache(RESULT_BUDGET_BYTES)


def _tensor_bytes(value) -> int:
    tensors = value if isinstance(value, tuple) else (value,)
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)) + 1024


def _may_run(key, cost: int, what: str, plan: jobs.Plan) -> bool:
    """Whether ``key``'s result may be shown now: it is cached, or it fits the server's bound on one job and
    is cheap or the student asked for it."""
    if key in result_cache():
        return True
    refused = jobs.refusal(plan)
    if refused:
        st.warning(refused, icon=":material/hourglass_disabled:")
        return False
    if cost <= AUTO_RUN_TOKENS:
        return True
    seconds = plan.seconds()
    st.caption(f"{what} takes {cost:,} token-passes through the model"
               + (f", about {seconds:,.0f} s on this server." if seconds else ", which can take a while."))
    return st.button(f"Run {what}", key=f"run-{hashlib.sha1(repr(key).encode()).hexdigest()[:12]}",
                     icon=":material/play_arrow:")


def ablated_capture(name: str, prompt: str, heads: tuple[tuple[int, int], ...], mode: str,
                    mlps: tuple[int, ...] = (), neurons: tuple[tuple[int, int], ...] = (), *,
                    ui: bool = True) -> opt_lens.Capture:
    """The capture of ``prompt`` with ``heads``, MLP layers ``mlps`` and MLP ``neurons`` (layer, neuron) knocked
    out (``mode`` "zero" or "mean"); the plain capture if none."""
    if not heads and not mlps and not neurons:
        return cached_capture(name, prompt, ui=ui)
    lm = shared_model(name, ui=ui)
    spinner = (st.spinner(f"Running {name} with {len(heads)} head(s), {len(mlps)} MLP layer(s) and "
                          f"{len(neurons)} neuron(s) knocked out…") if ui else contextlib.nullcontext())
    with spinner:
        return shared_capture((name, prompt, "ablate", heads, mlps, mode, neurons), lm,
                              lambda: opt_lens.capture(lm, prompt, ablate=list(heads), ablate_mlps=list(mlps),
                                                       ablate_neurons=list(neurons), ablate_with=mode))


def _knocked_out(name: str, prompt: str, heads=(), mode: str = "zero", mlps=(), neurons=()) -> str:
    what = (f"{len(heads)} head(s), {len(mlps)} MLP layer(s) and {len(neurons)} neuron(s) knocked out"
            if heads or mlps or neurons else "nothing knocked out")
    return f"Running {name} on the prompt with {what}, for the loss of every token…"


@shared_result(max_entries=256, spinner=_knocked_out)
def token_losses(name: str, prompt: str, heads: tuple[tuple[int, int], ...] = (), mode: str = "zero",
                 mlps: tuple[int, ...] = (), neurons: tuple[tuple[int, int], ...] = ()) -> torch.Tensor:
    """``[seq - 1]`` loss (nats) of each next token of the prompt, as the library computes it (reading the
    shared capture, which it never changes)."""
    return opt_lens.token_losses(ablated_capture(name, prompt, heads, mode, mlps, neurons, ui=False))


def head_effects(name: str, prompt: str, token_id: int) -> torch.Tensor | None:
    """``[n_layers, n_heads]``: change in log-probability of ``token_id`` when each head alone is knocked out
    (None while a large sweep waits for its button, or when it would take too long)."""
    lm = shared_model(name)
    arch = lm.arch
    n_variants = arch.n_layers * arch.n_heads
    key = (name, prompt, "head_effects", token_id)
    seq = cached_capture(name, prompt).seq_len
    # Each knocked-out head reruns the layers from its own: half the stack on average.
    plan = jobs.Plan(f"Knocking out each of {n_variants} heads of {name}", name, "head sweep", seq,
                     lambda tokens: n_variants * tokens * (arch.n_layers + 1) // 2)
    if not _may_run(key, n_variants * seq, f"knocking out each head of {name}", plan):
        return None
    with jobs.shared_wait(plan.label) as waiting:
        return result_cache().get(
            key,
            lambda: jobs.run(plan, lambda progress: opt_lens.head_effects(
                lm, cached_capture(name, prompt, ui=False), token_id=token_id, progress=progress)),
            _tensor_bytes, waiting=waiting,
        )


@shared_result(max_entries=128, spinner=lambda name, prompt, token_id: f"Splitting {name}'s score for the token "
               "into what each head and MLP layer wrote…")
def attribution(name: str, prompt: str, token_id: int):
    """Direct logit attribution of ``token_id`` at the last position (cheap: one capture, then linear algebra)."""
    lm = shared_model(name, ui=False)
    return opt_lens.attribute(lm, cached_capture(name, prompt, ui=False), token_id)


def patching(name: str, clean: str, corrupted: str, answer_id: int, wrong_id: int) -> tuple | None:
    """Residual-stream (``[n_layers + 1, seq]``) and per-head (``[n_layers, n_heads]``) patching, clean into
    corrupted (None while a large run waits for its button, or when it would take too long)."""
    lm = shared_model(name)
    arch = lm.arch
    key = (name, clean, corrupted, answer_id, wrong_id, "patching")
    seq = cached_capture(name, clean).seq_len

    def cells(tokens: int) -> int:  # one patched forward per cell: every (layer, token), then every head
        return (arch.n_layers + 1) * tokens + arch.n_layers * arch.n_heads

    plan = jobs.Plan(f"Patching {name}, every layer and token, then every head", name, "patching", seq,
                     lambda tokens: cells(tokens) * tokens * (arch.n_layers + 1) // 2,
                     shorter="Shorten both prompts")
    if not _may_run(key, cells(seq) * seq, f"patching {name}", plan):
        return None

    runs = cached_capture(name, clean), cached_capture(name, corrupted)  # the shared captures: no prompt runs again

    def work(progress):
        cells_resid = (arch.n_layers + 1) * seq
        resid = opt_lens.patch_resid(lm, *runs, answer_id=answer_id, wrong_id=wrong_id,
                                     progress=lambda done, total: progress(done, total + arch.n_layers * arch.n_heads))
        heads = opt_lens.patch_heads(lm, *runs, answer_id=answer_id, wrong_id=wrong_id,
                                     progress=lambda done, total: progress(cells_resid + done, cells_resid + total))
        return resid, heads

    with jobs.shared_wait(plan.label) as waiting:
        return result_cache().get(key, lambda: jobs.run(plan, work), _tensor_bytes, waiting=waiting)


@dataclasses.dataclass(frozen=True)
class PatchingSetup:
    """Two prompts and two answer texts as one model sees them: token ids and labels, or why it cannot run."""

    name: str
    clean: str
    corrupted: str
    problem: str | None = None
    answer_id: int | None = None
    wrong_id: int | None = None
    labels: tuple[str, ...] = ()
    clean_diff: float = 0.0  # logit(answer) - logit(wrong) after the clean prompt
    corrupted_diff: float = 0.0

    @property
    def clean_effect(self) -> float:
        return self.clean_diff - self.corrupted_diff


def patching_setup(name: str, clean: str, corrupted: str, answer: str, wrong: str) -> PatchingSetup:
    """Map the answer texts through this model's tokenizer and run both prompts (cached captures)."""
    if not clean.strip() or not corrupted.strip():
        return PatchingSetup(name, clean, corrupted, "Type both prompts first.")
    lm = shared_model(name)
    answer_token, wrong_token = views.answer_token(lm.tokenizer, answer), views.answer_token(lm.tokenizer, wrong)
    for role, token in (("answer", answer_token), ("wrong token", wrong_token)):
        if token.problem:
            return PatchingSetup(name, clean, corrupted, f"The {role}: {token.problem}")
    if answer_token.token_id == wrong_token.token_id:
        return PatchingSetup(name, clean, corrupted, "The answer and the wrong token are the same token: "
                                                     "patching measures the difference between two.")
    clean_cap, corrupted_cap = cached_capture(name, clean), cached_capture(name, corrupted)
    mismatch = views.length_mismatch(name, clean_cap.tokens, corrupted_cap.tokens)
    if mismatch:
        return PatchingSetup(name, clean, corrupted, mismatch)
    a, w = answer_token.token_id, wrong_token.token_id
    return PatchingSetup(
        name, clean, corrupted, None, a, w, tuple(views.pair_labels(clean_cap.tokens, corrupted_cap.tokens)),
        float(clean_cap.next_logits[a] - clean_cap.next_logits[w]),
        float(corrupted_cap.next_logits[a] - corrupted_cap.next_logits[w]),
    )
