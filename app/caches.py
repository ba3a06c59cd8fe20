"""The caches every student shares: loaded models, captures and results, each within a share of the memory limit.

One cached model object serves every session; captures are cached by (model, prompt) and never modified
after creation. Every cache here lives in this module, outside Streamlit's ``st.cache_data`` and
``st.cache_resource``: any client may send Streamlit's "Clear cache" message (accepted even in viewer
toolbar mode, and no setting refuses it), which clears those for the whole server, and would reload both
models and drop every finished sweep of the class.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import threading
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import streamlit as st

import opt_lens
from app import charts, jobs
from opt_lens.hub import hub_reachable
from opt_lens.memory import format_bytes, memory_limit, release_freed_memory

if TYPE_CHECKING:  # torch, which Tokenized holds, loads when a page first needs a model
    from opt_lens.tokens import Tokenized

logger = logging.getLogger(__name__)

# Share of the memory limit that cached models, captures and chart specs may hold; the rest is the server and
# the UI.
MODEL_SHARE, CAPTURE_SHARE, CHART_SHARE = 0.55, 0.15, 0.03
# The Compare page matches heads on the first tokens only: at 1024 tokens, matching every head of gpt2 with
# every head of opt-125m takes about 10 s; 128 tokens (8,000 query-key cells per head) are plenty to tell
# which patterns agree, in well under a second.
HEAD_MATCH_TOKENS = 128


class BudgetCache:
    """A least-recently-used cache bounded by bytes (or entries, each of size 1), shared by all sessions; one
    build per key at a time; entries older than ``ttl`` seconds, when given, are built again.

    An evicted value that a session still holds (a page still drawing from a capture) is handed out again
    rather than built again, and goes back into the cache: it takes memory anyway, and a second copy of it
    would take as much again. Thirty students with prompts of their own evict each other's captures while
    they use them; at the peak of such a class, memray counted more than twice the capture budget in
    captures' buffers and states.
    """

    def __init__(self, budget_bytes: int, ttl: float | None = None):
        self.budget_bytes = budget_bytes
        self.ttl = ttl
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._born: dict = {}
        self._lock = threading.Lock()
        self._building: dict = {}
        self._evicted: dict = {}  # key: (a weak reference to the value, its size), for values that allow one

    def get(self, key, build, size_of, still_valid=lambda value: True, waiting=None):
        """The value for ``key``, built once; an entry that is no longer ``still_valid`` is built again.

        While another session builds the same key, ``waiting()`` is called every quarter second: a page's
        update there lets Streamlit stop a student who leaves, rather than keep them blocked until the end.
        """
        with self._lock:
            if key in self._items and (not still_valid(self._items[key]) or self._expired(key)):
                del self._items[key], self._sizes[key]
            self._take_back(key, still_valid)
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._building.setdefault(key, threading.Lock())
        while not key_lock.acquire(timeout=0.25):  # a second student asking for the same thing waits
            if waiting is not None:
                waiting()
        try:
            return self._build_once(key, build, size_of)
        finally:
            key_lock.release()

    def _build_once(self, key, build, size_of):
        with self._lock:
            if key in self._items:
                return self._items[key]
        try:
            value = build()
        except BaseException:  # a stopped or failed build leaves nothing behind
            with self._lock:
                self._building.pop(key, None)
            raise
        size = size_of(value)
        with self._lock:
            self._make_room(size)
            self._items[key], self._sizes[key], self._born[key] = value, size, time.monotonic()
            self._building.pop(key, None)
        return value

    def make_room(self, size: int) -> None:
        with self._lock:
            self._make_room(size)

    def _make_room(self, size: int) -> None:
        while self._items and sum(self._sizes.values()) + size > self.budget_bytes:
            evicted, value = self._items.popitem(last=False)
            logger.info("Evicting %s to stay within %s", evicted, format_bytes(self.budget_bytes))
            size_evicted = self._sizes.pop(evicted)
            self._born.pop(evicted, None)
            if self.ttl is None:  # an entry that expires is built again anyway
                with contextlib.suppress(TypeError):  # values like tuples and bools take no weak reference
                    self._evicted[evicted] = (weakref.ref(value), size_evicted)
        for key in [key for key, (ref, _) in self._evicted.items() if ref() is None]:
            del self._evicted[key]

    def _take_back(self, key, still_valid) -> None:
        """Put an evicted value that is still alive back into the cache (the lock held)."""
        if key in self._items or key not in self._evicted:
            return
        ref, size = self._evicted.pop(key)
        value = ref()
        if value is not None and still_valid(value):
            self._make_room(size)
            self._items[key], self._sizes[key], self._born[key] = value, size, time.monotonic()

    def _expired(self, key) -> bool:
        return self.ttl is not None and time.monotonic() - self._born.get(key, 0.0) > self.ttl

    def __contains__(self, key) -> bool:
        with self._lock:
            if key in self._evicted:
                return self._evicted[key][0]() is not None
            return key in self._items and not self._expired(key)

    def keys(self) -> list:
        with self._lock:
            return list(self._items)


def server_wide(make):
    """``make()``'s value, made once per server process and kept in this module, not in Streamlit's caches;
    ``.clear()`` (tests: a fresh server) makes it again on next use."""
    lock, made = threading.Lock(), []

    @functools.wraps(make)
    def get():
        with lock:
            if not made:
                made.append(make())
            return made[0]

    def clear() -> None:
        with lock:
            made.clear()

    get.clear = clear
    return get


def shared_result(*, ttl: float | None = 3600, max_entries: int = 64, spinner=None, size_of=None, budget=None):
    """Like ``st.cache_data(ttl, max_entries, show_spinner=spinner)``, but server-wide, out of a client's reach.

    ``spinner`` is the text shown while the value is built, or a function of the arguments giving it (a wait
    names what it is doing: which model, how many tokens).
    The value is built once per arguments (which must be hashable) and the same object is handed to every
    session, unlike ``st.cache_data``'s copy per hit: pages must not modify it (tables are changed with
    ``assign``, which copies). A hit draws nothing. With ``size_of`` (bytes of a value) the cache holds at
    most ``budget()`` bytes instead of ``max_entries`` values.
    """
    def decorate(function):
        cache = server_wide(lambda: BudgetCache(budget() if size_of else max_entries, ttl))

        @functools.wraps(function)
        def cached(*args, **kwargs):
            key = (args, tuple(sorted(kwargs.items())))

            def build():
                text = spinner(*args, **kwargs) if callable(spinner) else spinner
                with st.spinner(text) if text else contextlib.nullcontext():
                    return function(*args, **kwargs)

            return cache().get(key, build, size_of or (lambda value: 1))

        cached.clear = cache.clear
        return cached

    return decorate


# Building a chart is Python holding the GIL: thirty students' new prompts building theirs at once only slowed
# each other down, and the server sent nothing to anyone for seconds, spinners included. So charts are built
# through a queue of their own, as many at once as the server has CPUs.
_CHART_QUEUE = jobs.JobQueue(jobs.cpu_count())


def shared_chart(function):
    """``function``'s Altair chart as a ``ChartSpec`` built once per arguments and drawn by every session
    (``charts.draw``): building and converting a chart cost more than all else a warm page does. The
    arguments must say everything the chart shows (model, prompt, view settings), never a session's state.
    Charts are built a few at a time (``_CHART_QUEUE``); a warm view, which builds nothing, never waits."""
    def build(*args, **kwargs) -> charts.ChartSpec:
        # A student who must wait is told at once and sees their place move; the caption stays until the chart
        # is drawn: a spinner shows only after half a second (on a server this busy its timer fired a second
        # late), and any element drawn after it ends it.
        job, slot, waited = jobs.Job("Drawing the chart"), st.empty(), []

        def on_wait(ahead: int) -> None:
            waited.append(ahead)
            slot.caption(f"Drawing the chart, {ahead} {'student' if ahead == 1 else 'students'} ahead of you…")

        try:
            _CHART_QUEUE.wait_turn(job, on_wait)
            try:
                if waited:
                    slot.caption("Drawing the chart…")
                with contextlib.nullcontext() if waited else st.spinner("Drawing the chart…"):
                    return charts.spec_of(function(*args, **kwargs))
            finally:
                _CHART_QUEUE.done(job)
        finally:
            slot.empty()

    cached = shared_result(size_of=lambda spec: spec.nbytes, budget=lambda: int(memory_limit()[0] * CHART_SHARE))(
        functools.wraps(function)(build))

    @functools.wraps(function)
    def chart(*args, **kwargs) -> charts.ChartSpec:
        # The wait is shown in one place that a cache hit keeps too (empty): a chart drawn after a build would
        # otherwise sit further down the page than after a hit, and the browser would build a new view for it
        # rather than update the data of the one it has.
        with st.empty():
            return cached(*args, **kwargs)

    chart.clear = cached.clear
    return chart


@server_wide
def model_cache() -> BudgetCache:
    return BudgetCache(int(memory_limit()[0] * MODEL_SHARE))


@server_wide
def capture_cache() -> BudgetCache:
    return BudgetCache(int(memory_limit()[0] * CAPTURE_SHARE))


@shared_result(ttl=600, max_entries=1)
def hub_online() -> bool:
    return hub_reachable()


@shared_result(ttl=60, max_entries=1)
def cached_hub_models() -> list[str]:
    """IDs of the Hub models in this computer's Hugging Face cache that load without the Hub, sorted.

    ``opt_lens.hub.cached_models`` finds them with huggingface_hub's own cache scan. Rescanned every minute,
    so a model a teacher downloads while the app runs shows up.
    """
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:  # checking configs imports transformers and torch (seconds): only when the cache holds any model
        if not any(repo.repo_type == "model" for repo in scan_cache_dir(constants.HF_HUB_CACHE).repos):
            return []
    except (CacheNotFound, OSError):
        return []
    return [model.repo_id for model in opt_lens.hub.cached_models()]


@shared_result(ttl=3600, max_entries=256)
def cached_description(name: str) -> dict:
    """Architecture facts from the config alone (no weights), for any model name."""
    return opt_lens.describe_pretrained(name, allow_local=False).to_dict()


def hand_back_freed_memory(value):
    """``value``, after handing the memory freed while building it back to the system (models, captures)."""
    release_freed_memory()
    return value


def shared_model(name: str, *, ui: bool = True) -> opt_lens.LoadedModel:
    """The shared loaded model, loaded within the memory budget (with a progress bar while downloading).

    Cached view functions pass ``ui=False``: the page has already loaded the model, and Streamlit would
    otherwise replay the progress elements on every cache hit.
    """
    cache = model_cache()

    def build() -> opt_lens.LoadedModel:
        n_params = cached_description(name)["n_params"]
        opt_lens.loading.refuse_unless_fits(name, n_params, cache.budget_bytes, "more than this server keeps for "
                                            f"models ({format_bytes(cache.budget_bytes)})")
        cache.make_room(opt_lens.loading.weights_bytes(n_params))  # evict before loading, not after
        if not ui:
            return hand_back_freed_memory(opt_lens.load(name, allow_local=False))
        bar = st.progress(0.0, text=f"Preparing {name}…")

        def progress(done: int, total: int, file_name: str) -> None:
            bar.progress(min(done / max(total, 1), 1.0),
                         text=f"Downloading {name}: {file_name} ({format_bytes(done)} of {format_bytes(total)})")

        try:
            with st.spinner(f"Loading {name} into memory…"):
                return hand_back_freed_memory(opt_lens.load(name, progress=progress, allow_local=False))
        finally:
            bar.empty()

    return cache.get(name, build, lambda lm: lm.weights_bytes)


def cached_capture(name: str, prompt: str, *, ui: bool = True,
                   attention_prefix: int | None = None) -> opt_lens.Capture:
    """The capture of ``prompt`` on model ``name``, shared read-only by everyone who asks for the same pair.

    ``attention_prefix`` keeps the attention of the first tokens only (see ``opt_lens.capture``).
    """
    lm = shared_model(name, ui=ui)
    key = (name, prompt, attention_prefix)
    if ui and key not in capture_cache():
        spinner = st.spinner(f"Running {name} on the prompt{_others_running(name)}…")
    else:
        spinner = contextlib.nullcontext()
    with spinner:
        return shared_capture(key, lm, lambda: opt_lens.capture(lm, prompt, attention_prefix=attention_prefix))


_RUNNING_LOCK = threading.Lock()
_RUNNING: dict[str, int] = {}  # model name: captures being taken on it now (they take turns on its lock)


def _others_running(name: str) -> str:
    with _RUNNING_LOCK:
        ahead = _RUNNING.get(name, 0)
    return f", {ahead} {'student' if ahead == 1 else 'students'} ahead of you" if ahead else ""


def shared_capture(key, lm: opt_lens.LoadedModel, run) -> opt_lens.Capture:
    """``run()``'s capture, built once for everyone who asks for ``key`` on ``lm`` and kept within budget.

    A capture reads its model for logits, so one taken on a model object since evicted is taken again. Each
    build's time is the server's measure of a forward pass, from which heavy jobs are estimated.
    """
    def build() -> opt_lens.Capture:
        with _RUNNING_LOCK:
            _RUNNING[lm.name] = _RUNNING.get(lm.name, 0) + 1
        try:
            start = time.monotonic()
            cap = run()
            jobs.forward_cost().record_forward(lm.name, cap.seq_len * lm.arch.n_layers, time.monotonic() - start)
        finally:
            with _RUNNING_LOCK:
                _RUNNING[lm.name] -= 1
        return hand_back_freed_memory(cap)

    return capture_cache().get(key, build, lambda cap: cap.nbytes(), still_valid=lambda cap: cap.taken_on(lm))


def tokenized_prompt(name: str, prompt: str, *, ui: bool = True) -> Tokenized:
    """``prompt`` in model ``name``'s tokens, cut at its context: the tokenizer only, never a forward pass, and
    no weights loaded for it (the loaded model's own tokenizer when the server holds the model)."""
    if name in model_cache().keys():
        lm = shared_model(name, ui=False)
        tokenizer, context = lm.tokenizer, lm.arch.max_positions
    else:
        with st.spinner(f"Loading the tokenizer of {name}…") if ui else contextlib.nullcontext():
            loaded = shared_tokenizer(name)
        tokenizer, context = loaded.tokenizer, loaded.max_positions
    return opt_lens.tokens.tokenize(tokenizer, prompt, context)


@shared_result(ttl=None, max_entries=16)
def shared_tokenizer(name: str) -> opt_lens.LoadedTokenizer:
    """A model's tokenizer alone (a few MB), shared by every session."""
    return opt_lens.load_tokenizer(name, allow_local=False)


def comparison_captures(name_a: str, name_b: str, prompt: str, *, ui: bool = True) -> tuple:
    """What the Compare page runs: both models on the prompt, attention kept for head matching only."""
    return tuple(cached_capture(name, prompt, ui=ui, attention_prefix=HEAD_MATCH_TOKENS) for name in (name_a, name_b))


def shared_generation(name: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None,
                      seed: int) -> opt_lens.Generation:
    """The generation for (model, prompt, settings), shared read-only by everyone who asks for it, run through
    the server's job queue.

    Kept with the captures, in their memory budget: greedy and seeded runs are reproducible, so one serves all.
    """
    lm = shared_model(name, ui=False)
    # Temperature 0 takes the most likely token: top-k and the seed cannot change the run, so they stay out.
    if temperature == 0:
        top_k, seed = None, 0
    key = ("generate", name, prompt, max_new_tokens, temperature, top_k, seed)
    label = f"{name} writing {max_new_tokens} tokens"

    def build() -> opt_lens.Generation:
        # One step per new token, each through every layer; single-token steps cost more per token than a batch.
        plan = jobs.Plan(label, name, "generation", tokenized_prompt(name, prompt, ui=False).seq_len,
                         lambda tokens: (tokens + max_new_tokens) * lm.arch.n_layers,
                         "Ask for fewer new tokens, or shorten the prompt", prior=2.0)
        refused = jobs.refusal(plan)
        if refused:
            raise opt_lens.OptLensError(refused)
        return jobs.run(plan, lambda progress: opt_lens.generate(
            lm, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
            progress=progress))

    with jobs.shared_wait(label) as waiting:
        return capture_cache().get(key, build, lambda gen: len(pickle.dumps(gen)), waiting=waiting)
