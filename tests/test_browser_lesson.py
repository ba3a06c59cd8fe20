"""The lesson and the buttons that move between pages, in Chromium: ``streamlit run`` on a free port, offline,
on the bundled demo models.

Every step, walked forward and back, shows the head, score and settings its banner names; the URL each
cross-page button leaves, opened in a fresh browser context, shows the same view. The server and Chromium
are test_browser's (skipped without Chromium, unless ``OPT_LENS_REQUIRE_BROWSER=1``).
"""

from __future__ import annotations

import urllib.parse

from app import experiments, keys, navigation
from browser_support import exception_texts, main_text, wait_for_app
from test_browser import browser, server  # noqa: F401 - pytest fixtures (and the skip without Chromium)
from test_lesson_walk import DEMO, STEPS, best_head, expected_settings

from playwright.sync_api import expect  # noqa: I001 - after test_browser, which skips without Playwright

SIDEBAR = '[data-testid="stSidebar"]'


def new_tab(browser):
    """A tab in a fresh context: no cookies, no session, as a student opening a link they were sent."""
    tab = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    tab.set_default_timeout(60_000)
    return tab


def query(tab) -> dict:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(tab.url).query)


def url_path(tab) -> str:
    return urllib.parse.urlsplit(tab.url).path.strip("/")


def assert_clean(tab, server) -> None:
    assert exception_texts(tab) == [], server.log()[-2000:]
    text = main_text(tab)
    assert "Something went wrong" not in text and "Error:" not in text and "Traceback" not in text, text[:1500]


def wait_for_step(tab, step: int) -> None:
    """Wait until the step's page has opened (a page switch is a second run after the click's) and drawn."""
    path = navigation.url_path(experiments.EXPERIMENTS[step - 1].page)
    tab.wait_for_url(lambda url: urllib.parse.urlsplit(url).path.strip("/") == path and f"lesson={step}" in url)
    wait_for_app(tab)
    tab.wait_for_selector(f'.st-key-lesson-banner:has-text("step {step} of {STEPS}")')


def chart_title(tab, text: str):
    return tab.locator('[data-testid="stVegaLiteChart"] .role-title-text', has_text=text).first


def assert_shows_step(tab, server, step: int) -> None:
    """The step's page, prompt, and the head, score and settings its banner names, on screen and in the URL.

    The page may still redraw a box once after its run (the browser reruns on seeing the new URL), so what
    is on screen is awaited (``expect``) rather than read once.
    """
    experiment = experiments.EXPERIMENTS[step - 1].for_model(DEMO)
    assert url_path(tab) == navigation.url_path(experiment.page), tab.url
    assert_clean(tab, server)
    expect(tab.locator(f"{SIDEBAR} textarea").first).to_have_value(experiment.prompt)
    url = query(tab)
    assert url[keys.PROMPT] == [experiment.prompt] and url[keys.LESSON] == [str(step)], url
    if experiment.head_metric:
        layer, head, score = best_head(DEMO, experiment.prompt, experiment.head_metric)
        expect(tab.locator(".st-key-lesson-banner")).to_contain_text(f"layer {layer}, head {head}: {score:.2f}")
    settings = expected_settings(DEMO, step)
    if keys.HEAD_METRIC in settings:  # Attention: the map of the head the banner names, under its score
        layer, head, metric = settings[keys.LAYER], settings[keys.HEAD], settings[keys.HEAD_METRIC]
        expect(chart_title(tab, f"{DEMO} · layer {layer} · head {head}")).to_be_attached()
        expect(tab.get_by_role("radio", name=metric, exact=True)).to_be_checked()
    if keys.LAYER in settings:  # Attention and Inside a head: the head the banner names, in the link
        for key, default in ((keys.LAYER, 0), (keys.HEAD, 0)):  # a default is left out of the link
            assert url.get(key, [str(default)]) == [str(settings[key])], url
    if keys.KNOCK_OUT in settings:  # Cause and effect: the head knocked out, the head looked at
        assert url[keys.KNOCK_OUT] == settings[keys.KNOCK_OUT] and url[keys.LOOK_AT] == [settings[keys.LOOK_AT]]
        knocked = tab.locator('[data-testid="stMultiSelect"]', has_text="Heads to knock out")
        expect(knocked).to_contain_text(settings[keys.KNOCK_OUT][0])
        expect(chart_title(tab, f"{settings[keys.LOOK_AT]} before")).to_be_attached()


REOPENED = (2, 5, 6)  # after a Next step on the same page (2, 6) and to another page (5); AppTest reopens all


def test_every_step_walked_forward_and_back_shows_what_its_banner_names_and_its_link_reopens_it(browser, server):
    tab = new_tab(browser)
    tab.goto(server.url)
    wait_for_app(tab, timeout=90_000)
    tab.get_by_role("button", name="Start the lesson").click()
    walk = [*range(1, STEPS + 1), *range(STEPS - 1, 0, -1)]
    for index, step in enumerate(walk):
        wait_for_step(tab, step)
        assert_shows_step(tab, server, step)
        if index < STEPS and step in REOPENED:  # the link, opened in a fresh context, shows the same step
            fresh = new_tab(browser)
            fresh.goto(tab.url)
            wait_for_step(fresh, step)
            assert_shows_step(fresh, server, step)
            fresh.context.close()
        if index + 1 < len(walk):
            tab.get_by_role("button", name="Next step" if walk[index + 1] > step else "Previous step").click()
    tab.context.close()


def test_a_lesson_link_to_another_page_opens_its_steps_page(browser, server):
    tab = new_tab(browser)
    tab.goto(f"{server.url}/attention?lesson=5")
    wait_for_step(tab, 5)
    assert_shows_step(tab, server, 5)
    tab.context.close()


def losses(tab) -> str:
    return " | ".join(tab.locator('[data-testid="stMetric"]').all_inner_texts())


def test_knock_this_head_out_keeps_the_prompt_and_its_link_reopens_the_same_view(browser, server):
    prompt = experiments.REPEATED_TEXT
    tab = new_tab(browser)
    tab.goto(f"{server.url}/attention?layer=1&head=2")
    wait_for_app(tab, timeout=90_000)
    area = tab.locator(f"{SIDEBAR} textarea").first
    area.fill(prompt)  # typed by the student, not from a link
    area.press("Control+Enter")
    wait_for_app(tab)
    tab.get_by_role("button", name="Knock this head out (L1.H2)").click()
    tab.wait_for_url("**/cause_and_effect?**")
    wait_for_app(tab)
    tab.wait_for_selector('[data-testid="stMetric"]')
    url = query(tab)
    assert url[keys.PROMPT] == [prompt] and url[keys.KNOCK_OUT] == ["L1.H2"] and url[keys.LOOK_AT] == ["L1.H2"], url
    assert_clean(tab, server)
    seen = losses(tab)
    assert "was" in seen  # the knocked-out run's losses, with the change

    fresh = new_tab(browser)
    fresh.goto(tab.url)
    wait_for_app(fresh, timeout=90_000)
    fresh.wait_for_selector('[data-testid="stMetric"]')
    assert fresh.locator(f"{SIDEBAR} textarea").first.input_value() == prompt
    assert losses(fresh) == seen
    fresh.context.close()

    tab.locator('[data-testid="stSidebarNav"] a', has_text="Tokens").first.click()  # then through the sidebar
    tab.wait_for_url("**/tokens**")
    wait_for_app(tab)
    assert query(tab)[keys.PROMPT] == [prompt], tab.url
    tab.context.close()
