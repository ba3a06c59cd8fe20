"""One server-wide queue for heavy work (head sweeps, patching, generation), estimated before it starts.

At most as many jobs run at once as the server has CPUs, in order of arrival; the others wait, and their page
says how many students are ahead. A job runs in its student's own script thread and updates its progress bar
after every step: when the student leaves or changes the prompt, Streamlit stops the script at that update,
the exception leaves the library's sweep (releasing the model's lock on its way out) and the job's place, and
the result cache keeps nothing of it. Each job is estimated from the measured cost of a forward pass on this
server and refused past ``OPT_LENS_MAX_JOB_SECONDS`` (default 60 s), saying what to change. The library's
sweeps call progress between blocks as well as between batches, so a running job stops within a block's time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import streamlit as st

logger = logging.getLogger(__name__)

MAX_SECONDS_ENV = "OPT_LENS_MAX_JOB_SECONDS"
DEFAULT_MAX_SECONDS = 60.0
POLL_SECONDS = 0.25  # how often a waiting page updates its place, which is also when a leaving student is seen
REPEAT_SECONDS = 0.2  # a running job's unchanged progress is sent again at most this often (its checkpoints)
# A sweep runs its variants in batches: about 0.16-0.30x the cost of as many separate forward passes
# (benchmarks/causal_cost.py); the estimate takes the slow end until this server has timed a job of the kind.
BATCHED_COST = 0.30
MIN_TOKEN_LAYERS = 256  # a forward timed on fewer tokens x layers (22 tokens of gpt2) is mostly fixed costs


def cpu_count() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def max_job_seconds() -> float:
    """The teacher's bound on one job, from ``OPT_LENS_MAX_JOB_SECONDS``; a value that is not a positive
    number is ignored (logged) for the default."""
    value = os.environ.get(MAX_SECONDS_ENV, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_MAX_SECONDS
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds) and seconds > 0:
        return seconds
    logger.warning("Ignoring %s=%r: not a positive number of seconds", MAX_SECONDS_ENV, value)
    return DEFAULT_MAX_SECONDS


@dataclass(eq=False)
class Job:
    label: str  # what the student sees, e.g. "Knocking out each of 144 heads of gpt2"
    number: int = field(default_factory=itertools.count().__next__)


class JobQueue:
    """First come, first served, with ``workers`` jobs running at once."""

    def __init__(self, workers: int):
        self.workers = workers
        self._changed = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: set[Job] = set()

    def ahead_of(self, job: Job) -> int | None:
        """How many jobs run or wait before ``job`` (None once it runs)."""
        with self._changed:
            return None if job in self._running else len(self._running) + self._waiting.index(job)

    def wait_turn(self, job: Job, on_wait: Callable[[int], None]) -> None:
        """Block until ``job`` may run, calling ``on_wait(jobs ahead)`` every ``POLL_SECONDS``; whatever
        ``on_wait`` raises (the student left) gives up the place."""
        with self._changed:
            self._waiting.append(job)
        try:
            while True:
                with self._changed:
                    if self._waiting[0] is job and len(self._running) < self.workers:
                        self._waiting.popleft()
                        self._running.add(job)
                        self._changed.notify_all()
                        return
                    ahead = len(self._running) + self._waiting.index(job)
                on_wait(ahead)
                with self._changed:
                    self._changed.wait(POLL_SECONDS)
        except BaseException:
            self._leave(job)
            raise

    def done(self, job: Job) -> None:
        self._leave(job)

    def _leave(self, job: Job) -> None:
        with self._changed:
            self._running.discard(job)
            if job in self._waiting:
                self._waiting.remove(job)
            self._changed.notify_all()

    def size(self) -> int:
        with self._changed:
            return len(self._running) + len(self._waiting)


_QUEUE_LOCK = threading.Lock()
_QUEUE: list[JobQueue] = []


def job_queue() -> JobQueue:
    """The server's queue (module state, so no client's "Clear cache" drops the jobs in it)."""
    with _QUEUE_LOCK:
        if not _QUEUE:
            _QUEUE.append(JobQueue(cpu_count()))
        return _QUEUE[0]


class ForwardCost:
    """Seconds per token per layer of one forward pass, per model, as this server has measured it; and per
    kind of job, how far its real time was from the estimate."""

    def __init__(self):
        self._lock = threading.Lock()
        self._per_token_layer: dict[str, float] = {}
        self._correction: dict[str, float] = {}
        self._largest: dict[str, int] = {}

    def record_forward(self, model: str, token_layers: int, seconds: float) -> None:
        """The fastest rate timed on enough tokens is the server's own speed: other students' runs at the same
        time only slow a forward down (how much a job really takes is learnt by ``record_job``), and on a few
        tokens fixed costs would dominate. Until a forward of ``MIN_TOKEN_LAYERS`` is timed, the largest so far."""
        rate = seconds / max(token_layers, 1)
        with self._lock:
            largest = self._largest.get(model, 0)
            if largest < MIN_TOKEN_LAYERS and token_layers >= largest:
                self._per_token_layer[model] = rate
            elif token_layers >= MIN_TOKEN_LAYERS:
                self._per_token_layer[model] = min(rate, self._per_token_layer[model])
            self._largest[model] = max(largest, token_layers)

    def per_token_layer(self, model: str) -> float | None:
        with self._lock:
            return self._per_token_layer.get(model)

    def estimate(self, model: str, kind: str, token_layers: int, prior: float = BATCHED_COST) -> float | None:
        """Seconds for ``token_layers`` token-passes through one layer each, at ``prior`` times a plain forward's
        cost until a job of this kind has been timed; None before any forward of the model was timed."""
        rate = self.per_token_layer(model)
        if rate is None:
            return None
        with self._lock:
            correction = self._correction.get(kind, prior)
        return token_layers * rate * correction

    def record_job(self, model: str, kind: str, token_layers: int, seconds: float) -> None:
        rate = self.per_token_layer(model)
        if rate and token_layers:
            with self._lock:
                self._correction[kind] = seconds / (token_layers * rate)


_COST = ForwardCost()


def forward_cost() -> ForwardCost:
    return _COST


@dataclass(frozen=True)
class Plan:
    """A heavy job before it runs: what it is, its size, and how its size follows the prompt's length."""

    label: str  # "Knocking out each of 144 heads of gpt2"
    model: str
    kind: str  # "head sweep", "patching", "generation": each learns its own cost
    tokens: int
    token_layers: Callable[[int], int]  # token-passes x layers for a prompt of that many tokens
    shorter: str = "Shorten the prompt"
    prior: float = BATCHED_COST  # cost per token-layer against a plain forward's, until one is timed

    def seconds(self, tokens: int | None = None) -> float | None:
        size = self.token_layers(self.tokens if tokens is None else tokens)
        return forward_cost().estimate(self.model, self.kind, size, self.prior)


def refusal(plan: Plan, limit: float | None = None) -> str | None:
    """Why ``plan`` may not run here (its estimate passes the bound), saying what to change; None if it may."""
    limit = max_job_seconds() if limit is None else limit
    seconds = plan.seconds()
    if seconds is None or seconds <= limit:
        return None
    fits = max((t for t in range(1, plan.tokens) if (plan.seconds(t) or 0) <= limit), default=0)
    to = f"to about {fits:,} tokens" if fits else "much further"
    return (f"{plan.label} on {plan.tokens:,} tokens would take about {seconds:,.0f} s on this server, more than the "
            f"{limit:,.0f} s one run may take here. {plan.shorter} {to}, or ask your teacher to raise "
            f"{MAX_SECONDS_ENV}.")


def run(plan: Plan, work: Callable[[Callable[[int, int], None]], object]):
    """``work(progress)`` through the server's queue, behind a bar saying its place, then how far it is.

    The bar disappears when the job is done; ``progress(done, total)`` is the library's sweep callback.
    """
    queue, job = job_queue(), Job(plan.label)
    bar = st.progress(0.0, text=f"{plan.label}: waiting for its turn…")

    def on_wait(ahead: int) -> None:
        bar.progress(0.0, text=f"{plan.label}: waiting, {ahead} {'student' if ahead == 1 else 'students'} "
                               "ahead of you.")

    shown = {"done": None, "at": 0.0}

    def progress(done: int, total: int) -> None:
        # The library calls this between blocks too, with the same count, so that Streamlit can stop a student
        # who left: every call is a chance to stop, but the page needs no more than a few repeats a second.
        if done == shown["done"] and time.monotonic() - shown["at"] < REPEAT_SECONDS:
            return
        shown.update(done=done, at=time.monotonic())
        bar.progress(min(done / max(total, 1), 1.0), text=f"{plan.label}: {done:,} of {total:,}")

    try:
        queue.wait_turn(job, on_wait)
        try:
            bar.progress(0.0, text=f"{plan.label}…")
            start = time.monotonic()
            result = work(progress)
            forward_cost().record_job(plan.model, plan.kind, plan.token_layers(plan.tokens), time.monotonic() - start)
            return result
        finally:
            queue.done(job)
    finally:
        bar.empty()


@contextlib.contextmanager
def shared_wait(label: str):
    """A ``waiting`` callback for a cache that another student is filling with the same run: it says so."""
    slot = st.empty()

    def waiting() -> None:
        slot.caption(f"{label}: another student started the same run, and its result will be yours too. Waiting…")

    try:
        yield waiting
    finally:
        slot.empty()
