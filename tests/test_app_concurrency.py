"""Twenty students at once: AppTest sessions in threads share one cached model and each gets its own answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

import opt_lens
from app import caches
from test_app import app, chart_rows

STUDENTS = 20
SUBJECTS = ["The cat", "Alice", "My teacher", "The dog", "Bob", "The red ball", "A bird", "The king", "Mary", "The sun"]


def prompt_of(student: int) -> str:
    return f"{SUBJECTS[student % len(SUBJECTS)]} sat on the {'mat' if student < 10 else 'chair'} and"


def student(index: int) -> tuple[str, list[dict], list, list]:
    at = app("pages/predictions.py", model="demo/tiny-gpt2", prompt=prompt_of(index)).run()
    return prompt_of(index), chart_rows(at.get("vega_lite_chart")[0]), list(at.exception), list(at.error)


def test_twenty_students_at_once_each_get_their_own_predictions():
    model_name = "demo/tiny-gpt2"
    with ThreadPoolExecutor(max_workers=STUDENTS) as pool:
        futures = [pool.submit(student, index) for index in range(STUDENTS)]
    # Every worker's exception, not just the first: one student failing fails the test, saying who and why.
    failures = {index: repr(future.exception()) for index, future in enumerate(futures) if future.exception()}
    assert failures == {}
    results = [future.result() for future in futures]

    alone = opt_lens.load(model_name)  # a separate model object: what each student would get alone
    guesses = set()
    for prompt, rows, exceptions, errors in results:
        assert exceptions == [] and errors == [], (prompt, exceptions, errors)
        expected = opt_lens.top_k_next(alone, opt_lens.capture(alone, prompt), k=10)
        assert [row["token"] for row in rows] == [p.token for p in expected], prompt
        assert [row["probability"] for row in rows] == pytest.approx([p.probability for p in expected], abs=1e-5)
        guesses.add(tuple(row["token"] for row in rows))
    assert len(guesses) > 1  # the prompts really differ in what they predict

    assert model_name in caches.model_cache().keys()  # one cached model object served everyone
