"""The lesson through the real entry point (st.navigation and page switches), in AppTest, offline.

Every step, walked forward and back, shows on its own page the head, score and settings its banner names,
and its URL reopens the same view; a lesson link opens its step's page wherever it points; a model that
cannot load leaves the usual short message and the sidebar, whichever way the lesson was entered.
"""

from __future__ import annotations

import functools

import pytest
from streamlit.testing.v1 import AppTest

import opt_lens
from app import experiments, keys, navigation, teacher
from opt_lens import heads
from test_app import ROOT, TIMEOUT

STEPS = len(experiments.EXPERIMENTS)
DEMO = "demo/tiny-gpt2"


def entry(page: str | None = None, **query) -> AppTest:
    """The app as a link opens it: the entry point, at ``page`` (the start page when None), with ``query``.

    Only the first run follows the app: AppTest keeps asking for ``page`` on later runs, so a test that
    clicks on opens the start page (``page`` None) and follows the app from there.
    """
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.query_params.update(query)
    if page is not None:
        at.switch_page(page)
    return at.run()


def title(at: AppTest) -> str:
    return at.title[0].value if at.title else ""


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.exception] + [e.value for e in at.error]


@functools.cache
def best_head(name: str, prompt: str, metric: str) -> tuple[int, int, float]:
    """(layer, head, score) of the best head on ``metric``, computed by hand from the library's scores, the
    way the Attention page describes them: previous token on the prompt, induction on random tokens shown
    twice (seed 0, 40 tokens)."""
    lm = opt_lens.load(name)
    if metric == "previous token":
        scores = heads.previous_token_scores(opt_lens.capture(lm, prompt).attention)  # [layer, head]
    else:
        probe, start, period = heads.induction_probe(lm, length=40, seed=0)
        scores = heads.induction_scores(probe.attention, start, period)  # [layer, head]
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    return layer, head, float(scores.max())


def expected_settings(name: str, step: int) -> dict:
    """The boxes step ``step`` sets on its page, with the values its banner names."""
    experiment = experiments.EXPERIMENTS[step - 1].for_model(name)
    if experiment.knock_out_metric:
        knocked = best_head(name, experiment.prompt, experiment.knock_out_metric)
        looked = best_head(name, experiment.prompt, experiment.head_metric)
        return {keys.KNOCK_OUT: [f"L{knocked[0]}.H{knocked[1]}"], keys.LOOK_AT: f"L{looked[0]}.H{looked[1]}"}
    if experiment.head_metric:
        layer, head, _ = best_head(name, experiment.prompt, experiment.head_metric)
        score_map = {keys.HEAD_METRIC: experiment.head_metric} if experiment.page == "pages/attention.py" else {}
        return {keys.LAYER: layer, keys.HEAD: head, **score_map}  # Inside a head has no score map
    return {}


URL_DEFAULTS = {keys.LAYER: 0, keys.HEAD: 0, keys.HEAD_METRIC: "previous token"}  # left out of the link


def shown_settings(at: AppTest, settings: dict) -> dict:
    """What the page's boxes named in ``settings`` show."""
    boxes = {keys.LAYER: at.selectbox, keys.HEAD: at.selectbox, keys.HEAD_METRIC: at.radio,
             keys.KNOCK_OUT: at.multiselect, keys.LOOK_AT: at.selectbox}
    return {key: boxes[key](key=key).value for key in settings}


def url_settings(at: AppTest, settings: dict) -> dict:
    """The settings as the URL holds them (a default value is left out of it)."""
    url = {}
    for key, value in settings.items():
        held = at.query_params.get(key)
        if held is None:
            url[key] = URL_DEFAULTS.get(key)
        else:
            url[key] = [held] if key == keys.KNOCK_OUT and isinstance(held, str) else held
            url[key] = int(held) if key in (keys.LAYER, keys.HEAD) else url[key]
    return url


def assert_shows_step(at: AppTest, name: str, step: int) -> None:
    """The step's page, banner, prompt, and the head, score and settings its banner names, in the boxes and
    in the URL."""
    experiment = experiments.EXPERIMENTS[step - 1].for_model(name)
    assert errors(at) == [], (step, errors(at))
    assert title(at) == navigation.PAGE_TITLES[experiment.page], step
    assert any(f"step {step} of {STEPS}: {experiment.title}" in m.value for m in at.markdown), step
    assert at.session_state[keys.PROMPT] == experiment.prompt
    assert at.query_params[keys.PROMPT] == experiment.prompt and at.query_params[keys.LESSON] == str(step)
    if experiment.head_metric:
        layer, head, score = best_head(name, experiment.prompt, experiment.head_metric)
        finding = f"the head with the highest {experiment.head_metric} score is layer {layer}, head {head}: {score:.2f}"
        assert any(finding in c.value for c in at.caption), (step, [c.value for c in at.caption])
    settings = expected_settings(name, step)
    assert shown_settings(at, settings) == settings, step
    assert url_settings(at, settings) == settings, (step, at.query_params)


def test_every_step_walked_forward_and_back_shows_what_its_banner_names_also_after_a_reload():
    at = entry(note="look here")
    at.button(key="lesson-start").click().run()
    walk = [*range(1, STEPS + 1), *range(STEPS - 1, 0, -1)]
    for index, step in enumerate(walk):
        assert_shows_step(at, DEMO, step)
        assert at.query_params[teacher.NOTE_KEY] == "look here"
        if index < STEPS:  # forward: the copied link, opened in a new session, shows the same step
            page = experiments.EXPERIMENTS[step - 1].page
            assert_shows_step(entry(page, **at.query_params), DEMO, step)
        if index + 1 < len(walk):
            at.button(key="lesson-next" if walk[index + 1] > step else "lesson-back").click().run()


@pytest.mark.parametrize("path, step", [("pages/attention.py", 2), ("pages/tokens.py", 5), ("pages/home.py", 1),
                                        ("pages/cause_and_effect.py", 6), ("pages/attention.py", 6)])
def test_a_lesson_link_opens_its_steps_page_and_settings_wherever_it_points(path, step):
    at = entry(path, lesson=str(step))
    assert_shows_step(at, DEMO, step)


def test_back_to_this_steps_page_keeps_the_whole_view_in_the_url():
    prompt = experiments.EXPERIMENTS[2].prompt  # a student's link, copied on another page than the step's
    at = entry("pages/compare.py", lesson="3", prompt=prompt, note="look here")
    at.sidebar.selectbox(key=keys.MODEL).select("demo/tiny-opt").run()  # chosen in the sidebar, not in a link
    assert title(at) == "Compare two models" and at.query_params[keys.MODEL] == "demo/tiny-opt"
    at.button(key="lesson-here").click().run()
    assert_shows_step(at, "demo/tiny-opt", 3)
    assert at.query_params[keys.MODEL] == "demo/tiny-opt" and at.query_params[teacher.NOTE_KEY] == "look here"


def test_a_lesson_link_keeps_its_model_and_presentation_mode():
    at = entry("pages/tokens.py", lesson="1", model="demo/tiny-opt", present="true")
    assert_shows_step(at, "demo/tiny-opt", 1)
    assert at.query_params[keys.MODEL] == "demo/tiny-opt" and at.query_params[keys.PRESENT] == "true"


UNLOADABLE = "foo/bar"  # a valid model ID that cannot load: the Hub is unreachable in the tests
UNREACHABLE, TOO_LARGE = "Cannot reach the Hugging Face Hub", "needs about"


@pytest.fixture
def over_budget(monkeypatch):
    """A memory budget the demo models (about 2 MB of weights) do not fit."""
    from app import caches

    monkeypatch.setenv("OPT_LENS_MEMORY_LIMIT_MB", "1")
    caches.model_cache.clear()
    yield
    monkeypatch.delenv("OPT_LENS_MEMORY_LIMIT_MB")
    caches.model_cache.clear()


def assert_usual_message(at: AppTest, page: str, message: str) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert title(at) == navigation.PAGE_TITLES[page]
    assert any(message in e.value for e in at.error), errors(at)
    assert at.sidebar.text_area(key=keys.PROMPT) and at.sidebar.selectbox(key=keys.MODEL)  # to change the model
    assert at.button(key="lesson-leave")  # the banner keeps its buttons


@pytest.mark.parametrize("page", ["pages/home.py", "pages/attention.py", "pages/tokens.py"])
def test_a_lesson_link_whose_model_cannot_load_shows_the_usual_message_and_the_sidebar(page):
    assert_usual_message(entry(page, lesson="2", model=UNLOADABLE), "pages/attention.py", UNREACHABLE)
    assert_usual_message(entry(page, lesson="5", model=UNLOADABLE), "pages/cause_and_effect.py", UNREACHABLE)


def test_a_lesson_link_past_the_memory_budget_shows_the_usual_message_and_the_sidebar(over_budget):
    assert_usual_message(entry("pages/predictions.py", lesson="1"), "pages/attention.py", TOO_LARGE)


def test_the_lesson_buttons_with_a_model_past_the_memory_budget_show_the_usual_message(over_budget):
    at = entry()
    at.button(key="lesson-start").click().run()
    assert_usual_message(at, "pages/attention.py", TOO_LARGE)
    at.button(key="lesson-next").click().run()  # the same page
    assert_usual_message(at, "pages/attention.py", TOO_LARGE)
    at.button(key="lesson-next").click().run()  # another page
    assert_usual_message(at, "pages/predictions.py", TOO_LARGE)
    at = entry()
    at.button(key="try-4").click().run()
    assert_usual_message(at, "pages/cause_and_effect.py", TOO_LARGE)
