"""Students at once on one real ``streamlit run`` server: sessions in threads share one cached model and each
gets its own answer, equal to what the library computes alone.

A real server, not AppTest: AppTest installs one mock Streamlit runtime per run process-wide and removes it when
the run ends, so AppTests run in threads pull it from under each other (a CI run failed that way). Each student
here is a websocket client speaking Streamlit's own protocol, one session each, as browser tabs would be.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

import opt_lens
from app import causal_views
from browser_support import StreamlitServer
from streamlit_client import StreamlitClient
from test_app import chart_rows, chart_title
from test_app_causal import REPEATED

STUDENTS = 20
SUBJECTS = ["The cat", "Alice", "My teacher", "The dog", "Bob", "The red ball", "A bird", "The king", "Mary", "The sun"]


@pytest.fixture(scope="module")
def server():
    with StreamlitServer() as running:
        yield running


def prompt_of(student: int) -> str:
    return f"{SUBJECTS[student % len(SUBJECTS)]} sat on the {'mat' if student < 10 else 'chair'} and"


def visit(server: StreamlitServer, page: str, **query) -> StreamlitClient:
    """One student's session, after one run of ``page``."""
    client = StreamlitClient(server.url)
    try:
        client.open(page, urlencode(query, doseq=True))
    finally:
        client.close()
    return client


def all_at_once(student, count: int) -> list:
    """``student(i)`` for every i in threads at once; every worker's exception, not only the first, fails."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(student, index) for index in range(count)]
    failures = {index: repr(future.exception()) for index, future in enumerate(futures) if future.exception()}
    assert failures == {}
    return [future.result() for future in futures]


def test_twenty_students_at_once_each_get_their_own_predictions(server):
    model_name = "demo/tiny-gpt2"
    results = all_at_once(lambda i: visit(server, "predictions", model=model_name, prompt=prompt_of(i)), STUDENTS)

    alone = opt_lens.load(model_name)  # a separate model object: what each student would get alone
    guesses = set()
    for index, client in enumerate(results):
        assert client.problems() == [], prompt_of(index)
        rows = chart_rows(client.charts[0])
        expected = opt_lens.top_k_next(alone, opt_lens.capture(alone, prompt_of(index)), k=10)
        assert [row["token"] for row in rows] == [p.token for p in expected], prompt_of(index)
        assert [row["probability"] for row in rows] == pytest.approx([p.probability for p in expected], abs=1e-5)
        guesses.add(tuple(row["token"] for row in rows))
    assert len(guesses) > 1  # the prompts really differ in what they predict
    assert server.log().count(f"Loaded {model_name}") == 1  # one model object served everyone


def test_students_at_once_each_see_their_own_knock_out(server):
    knock_outs = [["L1.H1"], ["L0.H1"], ["L1.H0", "L1.H3"], ["L0.H2"]]
    results = all_at_once(
        lambda i: visit(server, "cause_and_effect", model="demo/tiny-gpt2", prompt=REPEATED, knock_out=knock_outs[i]),
        len(knock_outs),
    )
    alone = opt_lens.load("demo/tiny-gpt2")
    for heads, client in zip(knock_outs, results):
        assert client.problems() == [], heads
        losses = next(c for c in client.charts if "loss of each next token" in chart_title(c))
        shown = [row["loss"] for row in chart_rows(losses) if row["run"] == "after"]
        expected = opt_lens.token_losses(opt_lens.capture(alone, REPEATED, ablate=causal_views.parse_heads(heads, 2, 4)))
        assert shown == pytest.approx(expected.tolist(), abs=1e-5), heads
