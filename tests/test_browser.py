"""The app in a real browser: ``streamlit run`` on a free port, driven by Playwright with Debian's Chromium.

Offline, on the bundled demo models. Screenshots of every page go to ``artifacts/screenshots/`` (not
committed). Without Chromium the module is skipped, unless ``OPT_LENS_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import os
import urllib.parse

import pandas as pd
import pytest

import opt_lens
from app import navigation

import hub_standin
from browser_support import (
    APP,
    CHROMIUM,
    StreamlitServer,
    count_script_runs,
    exception_texts,
    launch_chromium,
    main_text,
    screenshot,
    stale_marks,
    wait_for_app,
    watch_stale_marks,
)

if not CHROMIUM.exists():
    if os.environ.get("OPT_LENS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium)", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

PAGES = {  # sidebar link text -> the page's title
    "Start here": "opt_lens: look inside a language model",
    "Architecture": "Architecture",
    "Tokens": "Tokens",
    "Attention": "Attention",
    "Predictions & logit lens": "Predictions & logit lens",
    "Compare two models": "Compare two models",
}
XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"
ERROR_WORDS = ("Traceback", "Something went wrong", "Error:")
SIDEBAR, MAIN = '[data-testid="stSidebar"]', '[data-testid="stMain"]'


@pytest.fixture(scope="module")
def server():
    with StreamlitServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(45_000)
    tab.dialogs = []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    yield tab
    context.close()


def open_app(page, server, query: dict | None = None, path: str = ""):
    url = f"{server.url}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    page.goto(url)
    wait_for_app(page, timeout=90_000)  # a server's first page imports torch and loads a model


def assert_clean(page, server):
    assert exception_texts(page) == [], server.log()[-2000:]
    text = main_text(page)
    assert not [word for word in ERROR_WORDS if word in text], text[:2000]


def click_nav(page, label: str):
    page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
    wait_for_app(page)


def chart_titles(page) -> str:
    """The titles Vega draws into the charts (SVG text, so read from the DOM rather than inner_text)."""
    page.wait_for_selector('[data-testid="stVegaLiteChart"] .role-title-text')
    return " | ".join(page.eval_on_selector_all(
        '[data-testid="stVegaLiteChart"] .role-title-text', "els => els.map(e => e.textContent)"))


def title(page) -> str:
    return page.locator('[data-testid="stMain"] h1').first.inner_text().strip()


def choose(page, label: str, option: str, container='[data-testid="stMain"]'):
    """Pick ``option`` in the selectbox labelled ``label``."""
    page.locator(container).get_by_role("combobox", name=label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    wait_for_app(page)


def set_prompt(page, text: str):
    area = page.locator('[data-testid="stSidebar"] textarea').first
    area.fill(text)
    area.press("Control+Enter")
    wait_for_app(page)


def test_every_page_through_the_sidebar_shows_no_exception(page, server):
    open_app(page, server)
    assert_clean(page, server)
    for label, heading in PAGES.items():
        click_nav(page, label)
        assert title(page) == heading
        assert_clean(page, server)
        if label != "Start here":
            page.wait_for_selector('[data-testid="stVegaLiteChart"], [data-testid="stDataFrame"]', state="attached")
            page.wait_for_timeout(300)  # let charts finish drawing before the screenshot
        screenshot(page, f"page-{label.split()[0].lower()}")
    assert page.dialogs == []


def test_model_prompt_layer_and_head_follow_the_ui(page, server):
    open_app(page, server)
    click_nav(page, "Attention")
    assert "layer=" not in page.url and "head=" not in page.url  # defaults stay out of the link
    choose(page, "Layer", "1")
    choose(page, "Head", "2")
    assert "layer=1" in page.url and "head=2" in page.url
    assert "All 4 heads of layer 1" in main_text(page)
    assert "demo/tiny-gpt2 · layer 1 · head 2" in chart_titles(page)
    assert_clean(page, server)
    screenshot(page, "attention-layer1-head2")

    choose(page, "Model", "demo/tiny-opt", container='[data-testid="stSidebar"]')
    assert "model=demo%2Ftiny-opt" in page.url or "model=demo/tiny-opt" in page.url
    assert_clean(page, server)

    click_nav(page, "Tokens")
    assert "demo/tiny-opt:" in main_text(page)
    set_prompt(page, "Hello world")
    text = main_text(page)
    expected = opt_lens.capture(opt_lens.load("demo/tiny-opt"), "Hello world").seq_len
    assert f"demo/tiny-opt: {expected} tokens" in text, text[:500]
    assert "prompt=Hello" in page.url
    assert_clean(page, server)
    screenshot(page, "tokens-opt-hello")


def test_a_start_page_experiment_opens_its_page_prompt_and_best_head(page, server):
    open_app(page, server)
    card = page.locator('[class*="st-key-experiment-"]', has_text="A head that copies")
    card.get_by_role("button", name="Try it").click()
    page.wait_for_url("**/attention?**")  # the switch is a second run after the click's: wait for it
    wait_for_app(page)
    assert title(page) == "Attention"
    assert_clean(page, server)
    prompt = page.locator('[data-testid="stSidebar"] textarea').first.input_value()
    assert prompt.startswith("banana violin castle")
    lm = opt_lens.load("demo/tiny-gpt2")
    induction = opt_lens.heads.head_scores(lm, opt_lens.capture(lm, prompt)).induction  # [layer, head]
    layer, head = divmod(int(induction.argmax()), induction.shape[1])
    assert f"demo/tiny-gpt2 · layer {layer} · head {head}" in chart_titles(page)
    assert f"layer={layer}" in page.url and f"head={head}" in page.url and "prompt=banana" in page.url
    assert page.get_by_role("radio", name="induction").is_checked()
    screenshot(page, "experiment-copying-head")


def test_a_shared_url_restores_the_view(page, server):
    query = {"model": "demo/tiny-opt", "model_b": "demo/tiny-gpt2", "prompt": "The cat sat on the mat",
             "layer": "1", "head": "3"}
    open_app(page, server, query, path="attention")
    assert title(page) == "Attention"
    assert_clean(page, server)
    text = main_text(page)
    assert "All 4 heads of layer 1" in text, text[:1500]
    assert "demo/tiny-opt · layer 1 · head 3" in chart_titles(page)
    assert page.locator('[data-testid="stSidebar"] textarea').first.input_value() == "The cat sat on the mat"
    screenshot(page, "shared-url-attention")
    # The CSV is written when the button is clicked: it holds the head's pattern, computed here independently.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download this head's attention as CSV").click()
    table = pd.read_csv(download.value.path())
    lm = opt_lens.load("demo/tiny-opt")
    pattern = opt_lens.capture(lm, "The cat sat on the mat").pattern(1, 3)  # [query, key]
    assert len(table) == pattern.shape[0] * (pattern.shape[0] + 1) // 2 and set(table.layer) == {1}
    for row in table.itertuples():
        query, key = int(row.query.split(" ")[0]), int(row.key.split(" ")[0])
        assert abs(row.weight - float(pattern[query, key])) < 1e-5


# Counts every moment Streamlit's "Page not found" dialog is in the page, however briefly it shows.
WATCH_FOR_PAGE_NOT_FOUND = """
window.pageNotFoundSeen = 0;
new MutationObserver(() => {
  if (document.body && document.body.innerText.includes("Page not found")) window.pageNotFoundSeen += 1;
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def test_a_deep_link_to_a_fresh_server_opens_the_whole_app(page):
    with StreamlitServer() as fresh:  # no script has run in it yet: the link is its first request
        page.add_init_script(WATCH_FOR_PAGE_NOT_FOUND)
        page.goto(f"{fresh.url}/attention?model=demo/tiny-opt&layer=1&head=2")
        wait_for_app(page)
        assert "demo/tiny-opt · layer 1 · head 2" in chart_titles(page)
        assert title(page) == "Attention"
        assert_clean(page, fresh)
        assert page.evaluate("window.pageNotFoundSeen") == 0
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert sidebar.locator('[data-testid="stSidebarNav"] a', has_text="Compare two models").count() == 1
        assert sidebar.get_by_role("combobox", name="Model", exact=True).count() == 1
        assert sidebar.locator("textarea").first.input_value().startswith("Alice went to the park")


def test_a_deep_link_to_cause_and_effect_on_a_fresh_server_shows_no_page_not_found(page):
    with StreamlitServer() as fresh:
        page.add_init_script(WATCH_FOR_PAGE_NOT_FOUND)
        page.goto(f"{fresh.url}/{navigation.url_path('pages/cause_and_effect.py')}?knock_out=L1.H2")
        wait_for_app(page)
        assert title(page) == "Cause and effect"
        assert_clean(page, fresh)
        assert page.evaluate("window.pageNotFoundSeen") == 0


def test_other_students_use_the_app_while_one_waits_for_a_hub_that_never_answers(browser):
    hanging = hub_standin.HangingHub()
    # 15 s per Hub request (the default is 10): room for student B's clicks on a busy machine before A's ends.
    srv = StreamlitServer(env={"HF_ENDPOINT": hanging.endpoint, "NO_PROXY": "127.0.0.1", "HF_HUB_ETAG_TIMEOUT": "15",
                               "HF_HUB_DISABLE_TELEMETRY": "1"})
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    a, b = (context.new_page() for context in contexts)
    try:
        srv.wait_healthy()
        a.goto(f"{srv.url}/attention")
        wait_for_app(a, timeout=90_000)
        box = a.locator(SIDEBAR).get_by_role("combobox", name="Model", exact=True).first
        box.click()
        box.fill("facebook/opt-125m")
        box.press("Enter")
        a.wait_for_selector(f'{APP}[data-test-script-state="running"]')  # A's run now waits on the Hub
        hub_error = a.locator('[data-testid="stMain"] [data-testid="stAlert"]', has_text="Hugging Face Hub")

        b.goto(f"{srv.url}/attention?model=demo/tiny-opt&layer=1&head=2")
        wait_for_app(b, timeout=60_000)
        assert "demo/tiny-opt · layer 1 · head 2" in chart_titles(b)
        click_nav(b, "Predictions & logit lens")
        assert title(b) == "Predictions & logit lens"
        assert_clean(b, srv)
        assert hub_error.count() == 0 and a.locator(f'{APP}[data-test-script-state="running"]').count() == 1

        hub_error.wait_for(timeout=60_000)  # then A is told, without a traceback
        assert "Cannot reach the Hugging Face Hub" in hub_error.inner_text()
        assert exception_texts(a) == []
    finally:
        for context in contexts:
            context.close()
        srv.stop()
        hanging.stop()


def test_bad_url_parameters_fall_back_to_defaults(page, server):
    open_app(page, server, {"model": "../../etc/passwd", "layer": "-5", "head": "x" * 50}, path="attention")
    assert_clean(page, server)
    assert "demo/tiny-gpt2 · layer 0 · head 0" in chart_titles(page)


def test_a_prompt_with_markup_shows_as_text_and_runs_no_script(page, server):
    open_app(page, server, path="tokens")
    page.evaluate("window.__xss = undefined")
    set_prompt(page, XSS)
    for label in ("Tokens", "Attention", "Predictions & logit lens", "Compare two models"):
        click_nav(page, label)
        assert_clean(page, server)
    click_nav(page, "Tokens")
    page.wait_for_timeout(500)
    assert page.dialogs == []
    assert page.evaluate("window.__xss") is None
    # The markup appears as characters, not as elements: no <img src=x> or injected <script> in the page.
    assert page.locator('[data-testid="stMain"] img[src="x"]').count() == 0
    assert page.locator('[data-testid="stMain"] script').count() == 0
    pieces = page.eval_on_selector_all(  # each token chip: its text, then its id in a <sub>
        '[data-testid="stMain"] [data-testid="stMarkdownContainer"] span[title^="id "]',
        "els => els.map(e => e.firstChild.textContent)")
    assert "".join(pieces).replace("␣", " ").endswith(XSS)
    assert page.locator('[data-testid="stSidebar"] textarea').first.input_value() == XSS
    screenshot(page, "tokens-markup-prompt")


def type_model(page, label: str, name: str, container: str) -> None:
    """Type a model ID into the model box labelled ``label`` and press Enter."""
    box = page.locator(container).get_by_role("combobox", name=label, exact=True).first
    box.click()
    box.fill(name)
    box.press("Enter")
    wait_for_app(page)


@pytest.mark.parametrize(
    "path, query, label, container, current",
    [
        ("tokens", None, "Model", SIDEBAR, "demo/tiny-gpt2"),
        ("tokens", None, "Compare with", MAIN, "demo/tiny-opt"),
        ("compare", None, "Model B", MAIN, "demo/tiny-opt"),
        ("cause_and_effect", {"two_models": "true"}, "Model B", MAIN, "demo/tiny-opt"),  # every model box
    ],
)
def test_typing_the_model_in_use_settles_instead_of_rerunning_forever(
    page, server, path, query, label, container, current
):
    open_app(page, server, query=query, path=path)
    type_model(page, label, current, container)
    assert count_script_runs(page, seconds=10) == 0
    assert_clean(page, server)
    click_nav(page, "Architecture")  # page links still work
    assert title(page) == "Architecture"


def test_a_typed_name_that_is_not_a_model_id_keeps_the_model_in_use(page, server):
    open_app(page, server, path="tokens")
    type_model(page, "Model", "demo/tiny-opt", SIDEBAR)  # typed, not picked: taken all the same
    assert "demo/tiny-opt:" in main_text(page)
    type_model(page, "Model", "../../etc/passwd", SIDEBAR)
    errors = page.locator(SIDEBAR).locator('[data-testid="stAlert"]', has_text="not a model ID")
    assert errors.count() == 1 and "passwd" in errors.first.inner_text()
    assert "demo/tiny-opt:" in main_text(page) and "passwd" not in page.url  # the previous model, not the default
    assert_clean(page, server)


def test_switching_layer_or_head_reruns_only_the_head_views(page, server):
    open_app(page, server, path="attention")
    watch_stale_marks(page, SIDEBAR)
    choose(page, "Layer", "1")
    choose(page, "Head", "2")
    assert "demo/tiny-gpt2 · layer 1 · head 2" in chart_titles(page)
    assert "layer=1" in page.url and "head=2" in page.url
    assert stale_marks(page) == 0  # the sidebar, outside the fragment, was never redrawn
    set_prompt(page, "The dog ran to the park")  # while a change of prompt reruns the whole page
    assert "demo/tiny-gpt2 · layer 1 · head 2" in chart_titles(page)


def test_a_change_of_head_leaves_the_layers_small_multiples_alone(page, server):
    """The small maps of every head of the layer are the page's largest chart (3,600 cells at 256 tokens with
    gpt2): a head switch that redrew them cost about 140 ms in the browser."""
    open_app(page, server, path="attention")
    # The chart's own element (an empty placeholder beside it is marked stale on a head switch, redrawing nothing)
    small_maps = '.st-key-layer_heads [data-testid="stElementContainer"]:has([data-testid="stVegaLiteChart"])'
    page.locator(small_maps).wait_for()
    watch_stale_marks(page, small_maps)
    choose(page, "Head", "2")
    assert "demo/tiny-gpt2 · layer 0 · head 2" in chart_titles(page)
    assert stale_marks(page) == 0  # with the head's views in the layer's fragment: 1 mark
    choose(page, "Layer", "1")  # while a change of layer redraws them
    assert "demo/tiny-gpt2 · layer 1 · head 2" in chart_titles(page)
    assert "All 4 heads of layer 1" in page.locator(".st-key-layer_heads").inner_text()


CHART_VIEWS = '[data-testid="stMain"] .vega-embed > .marks'  # the svg or canvas each Vega view draws in


def test_a_change_of_head_updates_the_charts_data_in_place(page, server):
    """The head's charts keep one spec from head to head (titles and the outline are in their data), so the
    browser updates the data of the views it has instead of building new ones; also when a chart was built in
    this run (a wait shown before it) and the last was not."""
    open_app(page, server, path="attention")
    page.locator(CHART_VIEWS).nth(3).wait_for()  # the map, the focus row, the small maps, the score map
    page.locator(CHART_VIEWS).evaluate_all("views => views.forEach((view, i) => { view.__drawnBefore = i; })")
    for head in ("2", "0", "2"):  # head 2 is built for the first time, head 0 was built on opening the page
        choose(page, "Head", head)
        assert f"demo/tiny-gpt2 · layer 0 · head {head}" in chart_titles(page)
        assert f"Where “25 ␣the” looks · layer 0 · head {head}" in chart_titles(page)
        kept = page.locator(CHART_VIEWS).evaluate_all("views => views.map((view) => view.__drawnBefore ?? null)")
        assert kept == [0, 1, 2, 3], kept  # titles in the specs: [None, None, 2, 3]
    assert_clean(page, server)


def test_a_click_on_the_score_map_opens_a_head_of_another_layer(page, server):
    open_app(page, server, {"layer": "0", "head": "1"}, path="attention")
    cell = page.locator('[data-testid="stVegaLiteChart"] g.mark-rect path[aria-label^="head: 3; layer: 1;"]').first
    cell.scroll_into_view_if_needed()
    box = cell.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**layer=1*")
    wait_for_app(page)
    assert "demo/tiny-gpt2 · layer 1 · head 3" in chart_titles(page) and "head=3" in page.url
    assert "All 4 heads of layer 1" in main_text(page)  # the layer's own views follow, not only the head's
    assert_clean(page, server)
