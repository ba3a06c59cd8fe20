"""The server-wide job queue: order of arrival, the place shown, cancellation, refusal, and jobs beside a page."""

from __future__ import annotations

import contextlib
import threading
import time

import altair as alt
import pandas as pd
import pytest
import torch

import opt_lens
from app import caches, causal_runs, jobs
from opt_lens import sweeps
from test_app import app


class Stopped(BaseException):
    """Stands in for Streamlit's StopException, raised at a page update when the student leaves."""


class Bar:
    """What ``st.progress`` returns, recording every text it shows."""

    def __init__(self, texts):
        self.texts = texts

    def progress(self, value, text=""):
        self.texts.append(text)

    def empty(self):
        self.texts.append(None)


def record_bars(monkeypatch) -> list:
    texts: list = []
    monkeypatch.setattr(jobs.st, "progress", lambda value, text="": Bar(texts))
    return texts


def test_jobs_start_in_order_of_arrival_and_each_is_told_its_place():
    queue = jobs.JobQueue(workers=1)
    first, started, places = jobs.Job("first"), [], {}
    queue.wait_turn(first, lambda ahead: None)  # runs at once: the queue was empty

    def student(name: str) -> None:
        job = jobs.Job(name)
        queue.wait_turn(job, lambda ahead: places.setdefault(name, []).append(ahead))
        started.append(name)
        queue.done(job)

    threads = []
    for name in ("second", "third", "fourth"):
        threads.append(threading.Thread(target=student, args=(name,)))
        threads[-1].start()
        while queue.size() < len(threads) + 1:  # each arrives before the next
            time.sleep(0.01)
    time.sleep(2 * jobs.POLL_SECONDS)
    assert started == []  # one worker, busy with the first job
    assert {name: ahead[0] for name, ahead in places.items()} == {"second": 1, "third": 2, "fourth": 3}
    queue.done(first)
    for thread in threads:
        thread.join(timeout=10)
    assert started == ["second", "third", "fourth"]
    assert queue.size() == 0


def test_the_page_shows_how_many_students_are_ahead_then_how_far_the_job_is(monkeypatch):
    queue = jobs.JobQueue(workers=1)
    monkeypatch.setattr(jobs, "_QUEUE", [queue])
    texts = record_bars(monkeypatch)
    release = threading.Event()

    def another_student() -> None:
        job = jobs.Job("another student's sweep")
        queue.wait_turn(job, lambda n: None)
        release.wait()
        queue.done(job)

    for _ in range(2):  # one runs, one waits
        threading.Thread(target=another_student).start()
    while queue.size() < 2:
        time.sleep(0.01)
    threading.Timer(3 * jobs.POLL_SECONDS, release.set).start()

    def work(progress):
        for layer in range(1, 4):
            progress(layer * 12, 36)
        return "done"

    plan = jobs.Plan("Knocking out each of 36 heads of m", "m", "head sweep", 10, lambda tokens: tokens)
    assert jobs.run(plan, work) == "done"
    assert "Knocking out each of 36 heads of m: waiting, 2 students ahead of you." in texts
    assert texts[-4:] == ["Knocking out each of 36 heads of m: 12 of 36", "Knocking out each of 36 heads of m: 24 of 36",
                          "Knocking out each of 36 heads of m: 36 of 36", None]  # then the bar goes
    assert queue.size() == 0


def test_a_jobs_checkpoints_repeat_its_progress_a_few_times_a_second_not_every_block(monkeypatch):
    monkeypatch.setattr(jobs, "_QUEUE", [jobs.JobQueue(workers=1)])
    texts = record_bars(monkeypatch)

    def work(progress):
        for _ in range(50):  # fifty blocks' checkpoints in well under REPEAT_SECONDS
            progress(12, 36)
        time.sleep(jobs.REPEAT_SECONDS * 1.5)
        progress(12, 36)  # a slow block later: shown again, so the page can still stop the job there
        progress(24, 36)

    jobs.run(jobs.Plan("Sweep", "m", "head sweep", 10, lambda tokens: tokens), work)
    assert [t for t in texts if t and " of " in t] == ["Sweep: 12 of 36", "Sweep: 12 of 36", "Sweep: 24 of 36"]


def test_a_student_leaving_mid_sweep_stops_it_releases_the_lock_and_caches_nothing(monkeypatch, tiny_lm):
    lm = tiny_lm("gpt2")
    monkeypatch.setattr(jobs, "_QUEUE", [jobs.JobQueue(workers=1)])
    texts = []

    class LeavingBar(Bar):
        def progress(self, value, text=""):
            super().progress(value, text)
            if text.endswith(f" of {n_variants}"):  # a sweep step's update: the student has gone, Streamlit stops the script
                raise Stopped

    n_variants = lm.arch.n_layers * lm.arch.n_heads
    assert lm.arch.n_layers >= 2 and lm.arch.n_heads >= 2
    prompt = "one two three four one two three four"
    # One head per batch, as a long prompt's sweep runs: the student is seen leaving after one batch, not a layer.
    monkeypatch.setattr(sweeps, "ROWS_PER_BATCH", lm.tokenizer(prompt, return_tensors="pt").input_ids.shape[1])
    monkeypatch.setattr(jobs.st, "progress", lambda value, text="": LeavingBar(texts))
    plan = jobs.Plan("Knocking out each head", lm.name, "head sweep", 8, lambda tokens: tokens)
    key = ("test", "leaving")
    cache = causal_runs.result_cache()
    layers_run = []

    def work(progress):
        def counted(done, total):
            layers_run.append(done)
            progress(done, total)

        return opt_lens.head_effects(lm, prompt, progress=counted)

    with pytest.raises(Stopped):
        cache.get(key, lambda: jobs.run(plan, work), causal_runs._tensor_bytes)
    assert layers_run == [0]  # stopped at the first block of its first batch (one head), none done yet
    assert key not in cache  # nothing half-done is kept
    assert not lm.exclusive().locked()  # the model's lock is free
    assert jobs.job_queue().size() == 0  # and the job left the queue
    assert texts[-1] is None  # its bar is gone


def test_a_student_leaving_mid_generation_stops_it_after_one_token(monkeypatch):
    """Generation runs through the queue like a sweep, and stops at the first token after the student left."""
    lm = caches.shared_model("demo/tiny-gpt2", ui=False)
    monkeypatch.setattr(jobs, "_QUEUE", [jobs.JobQueue(workers=1)])
    texts, steps = [], []

    class LeavingBar(Bar):
        def progress(self, value, text=""):
            super().progress(value, text)
            if text.endswith(" of 40"):  # a token's update: the student has gone
                raise Stopped

    monkeypatch.setattr(jobs.st, "progress", lambda value, text="": LeavingBar(texts))
    original = opt_lens.generation.trace
    monkeypatch.setattr(opt_lens.generation, "trace", lambda *a, **k: (steps.append(1), original(*a, **k))[1])
    prompt = f"the cat sat on the mat {time.time()}"  # no other test's generation of it is cached
    with pytest.raises(Stopped):
        caches.shared_generation(lm.name, prompt, 40, 0.0, None, 0)
    assert len(steps) == 1  # one token's forward, not forty
    assert [t for t in texts if t and " of " in t] == [f"{lm.name} writing 40 tokens: 1 of 40"]
    assert not any(key[:3] == ("generate", lm.name, prompt) for key in caches.capture_cache().keys())
    assert not lm.exclusive().locked() and jobs.job_queue().size() == 0 and texts[-1] is None


def test_a_job_past_the_bound_is_refused_saying_what_to_change(monkeypatch):
    monkeypatch.setenv(jobs.MAX_SECONDS_ENV, "60")
    cost = jobs.ForwardCost()
    monkeypatch.setattr(jobs, "_COST", cost)
    cost.record_forward("gpt2", token_layers=1000, seconds=1.0)  # 1 ms per token per layer
    # 144 variants x tokens x 6.5 layers at 1 ms x 0.3: 1,000 tokens is 280.8 s; 213 tokens is 59.8 s, 214 60.1 s.
    plan = jobs.Plan("Knocking out each of 144 heads of gpt2", "gpt2", "head sweep", 1000,
                     lambda tokens: 144 * tokens * 13 // 2)
    message = jobs.refusal(plan)
    assert message == ("Knocking out each of 144 heads of gpt2 on 1,000 tokens would take about 281 s on this server, "
                       "more than the 60 s one run may take here. Shorten the prompt to about 213 tokens, or ask your "
                       "teacher to raise OPT_LENS_MAX_JOB_SECONDS.")
    monkeypatch.setenv(jobs.MAX_SECONDS_ENV, "300")  # the teacher raised the bound
    assert jobs.refusal(plan) is None
    cost.record_job("gpt2", "head sweep", plan.token_layers(1000), seconds=600.0)  # slower than thought: learnt
    assert "about 600 s" in jobs.refusal(plan)


def test_a_hostile_bound_is_ignored_for_the_default(monkeypatch):
    for value in ("-5", "nan", "inf", "lots", "0"):
        monkeypatch.setenv(jobs.MAX_SECONDS_ENV, value)
        assert jobs.max_job_seconds() == jobs.DEFAULT_MAX_SECONDS, value


def test_two_jobs_and_a_cheap_page_at_once(monkeypatch, tiny_lm):
    """One worker: the second job waits for the first, and a student opening the Tokens page meanwhile is not
    held up by either; both jobs give the library's own answer."""
    lm = tiny_lm("gpt2")
    monkeypatch.setattr(jobs, "_QUEUE", [jobs.JobQueue(workers=1)])
    record_bars(monkeypatch)
    prompts = ["the cat sat on the mat " * 12, "a dog ran in the park " * 12]
    expected = [opt_lens.head_effects(lm, prompt) for prompt in prompts]
    start = time.monotonic()
    for prompt in prompts:
        opt_lens.head_effects(lm, prompt)
    alone = (time.monotonic() - start) / 2
    results, order = {}, []

    def job(index: int) -> None:
        def work(progress):
            order.append(("start", index))
            value = opt_lens.head_effects(lm, prompts[index], progress=progress)
            time.sleep(1.0)  # long enough that the page opens while the jobs hold the queue
            order.append(("end", index))
            return value

        results[index] = jobs.run(jobs.Plan(f"job {index}", lm.name, "head sweep", 1, lambda t: t), work)

    threads = [threading.Thread(target=job, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    page_start = time.monotonic()
    at = app("pages/tokens.py", model="demo/tiny-gpt2", prompt="one two three").run()
    page_seconds = time.monotonic() - page_start
    busy = jobs.job_queue().size()
    for thread in threads:
        thread.join(timeout=60)
    assert not at.exception and not at.error
    assert busy >= 1  # the page was drawn while the jobs were still queued or running
    assert order == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]  # one at a time, in order of arrival
    for index in range(2):
        torch.testing.assert_close(results[index], expected[index])
    assert page_seconds < 2.5 + 4 * alone  # not held up until both jobs were done
    caches.model_cache.clear()


def test_a_capture_waiting_on_the_model_says_how_many_students_are_ahead(monkeypatch):
    """Captures take turns on the model's lock: a student whose capture waits behind another's is told so."""
    lm = caches.shared_model("demo/tiny-gpt2", ui=False)
    release, started, spinners = threading.Event(), threading.Event(), []
    original = opt_lens.capture

    def slow_capture(model, prompt, **options):
        if prompt == "first student":
            started.set()
            release.wait(10)
        return original(model, prompt, **options)

    monkeypatch.setattr(opt_lens, "capture", slow_capture)
    monkeypatch.setattr(caches.st, "spinner", lambda text: (spinners.append(text), contextlib.nullcontext())[1])
    first = threading.Thread(target=caches.cached_capture, args=(lm.name, "first student"), kwargs={"ui": False})
    first.start()
    started.wait(10)
    try:
        caches.cached_capture(lm.name, "second student " + str(time.time()))
    finally:
        release.set()
        first.join(10)
    assert spinners == ["Running demo/tiny-gpt2 on the prompt, 1 student ahead of you…"]
    assert (lm.name, "first student", None) in caches.capture_cache()  # the first student's capture was kept


def test_the_forward_cost_is_the_servers_own_speed_not_a_busy_moment():
    cost = jobs.ForwardCost()
    cost.record_forward("gpt2", token_layers=12, seconds=0.012)  # a 1-token prompt: mostly fixed costs
    assert cost.per_token_layer("gpt2") == pytest.approx(1e-3)
    cost.record_forward("gpt2", token_layers=1200, seconds=0.12)
    assert cost.per_token_layer("gpt2") == pytest.approx(1e-4)
    cost.record_forward("gpt2", token_layers=1200, seconds=0.6)  # five students at once slowed this one
    cost.record_forward("gpt2", token_layers=12, seconds=0.1)
    assert cost.per_token_layer("gpt2") == pytest.approx(1e-4)


def test_a_queue_of_two_workers_lets_two_in_at_once_in_order_of_arrival():
    """The chart queue's shape (``caches._CHART_QUEUE``): as many at once as CPUs, the rest in order."""
    queue, inside, most, order = jobs.JobQueue(workers=2), [0], [0], []
    lock, release, waiting = threading.Lock(), threading.Event(), {}

    def student(name: str) -> None:
        job = jobs.Job(name)
        queue.wait_turn(job, lambda ahead: waiting.setdefault(name, ahead))
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            order.append(name)
        release.wait(10)
        with lock:
            inside[0] -= 1
        queue.done(job)

    threads = []
    for number in range(6):
        threads.append(threading.Thread(target=student, args=(f"s{number}",)))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while queue.size() < number + 1 and time.monotonic() < deadline:  # each arrives before the next
            time.sleep(0.005)
    time.sleep(0.05)
    assert order == ["s0", "s1"] and waiting["s5"] == 5  # two inside, three waiting before the last
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == [f"s{n}" for n in range(6)] and most[0] == 2 and queue.size() == 0


def test_a_student_whose_chart_must_wait_is_told_their_place_at_once_and_a_warm_view_never_waits(monkeypatch):
    queue = jobs.JobQueue(workers=1)
    monkeypatch.setattr(caches, "_CHART_QUEUE", queue)
    captions = []

    class Slot:  # Streamlit's placeholder, as shared_chart uses it: a place to write in, and a context
        def caption(self, text):
            captions.append(text)

        def empty(self):
            captions.append(None)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

    monkeypatch.setattr(caches.st, "empty", Slot)
    builds = []

    @caches.shared_chart
    def chart(label: str):
        builds.append(label)
        return alt.Chart(pd.DataFrame({"x": [1, 2]})).mark_bar().encode(x="x")

    warm = chart("warm")  # built on an idle server: no caption, only Streamlit's delayed spinner
    assert captions == [None]  # the unused slot taken away
    captions.clear()
    other = jobs.Job("another student's chart")
    queue.wait_turn(other, lambda ahead: None)
    threading.Timer(0.3, queue.done, args=(other,)).start()
    assert chart("warm") is warm  # a hit while the only place is taken: no wait, no caption
    assert captions == []
    chart("new prompt")
    assert captions[0] == "Drawing the chart, 1 student ahead of you…"
    assert set(captions[:-2]) == {captions[0]} and captions[-2:] == ["Drawing the chart…", None]
    assert builds == ["warm", "new prompt"] and queue.size() == 0
