"""The app at 1024x768, a school laptop's screen, in Chromium: nothing wider than its column, nothing cut off.

The main column is 564 px wide there (the sidebar open). Issue 20.7: twelve small attention maps made a chart
880 px wide, Compare's metrics were cut to "0.310 …", the two models of Cause and effect's section 5 drifted
apart, and the per-token loss chart's axis was a smear of labels on long prompts. A 12-head model is served
by a stand-in Hub as ``gpt2`` (random weights, two layers); the rest runs on the demo models.
"""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, GPT2Config

from app import causal_views as views

import hub_standin
import tiny_models
from browser_support import StreamlitServer, screenshot, wait_for_app
# Skips this module too where Chromium is missing; browser is a pytest fixture.
from test_browser import assert_clean, browser, open_app  # noqa: F401

LAPTOP = {"width": 1024, "height": 768}
# Every chart's drawing against the element Streamlit gives it, and the page against the window.
WIDTHS = """() => ({
    page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
    main: [...document.querySelectorAll('[data-testid="stMain"]')].map(m => [m.scrollWidth, m.clientWidth])[0],
    charts: [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(chart => {
        const drawing = chart.querySelector('svg, canvas');
        return [Math.round(drawing.getBoundingClientRect().width), Math.round(chart.parentElement.clientWidth)];
    }),
})"""


@pytest.fixture(scope="module")
def twelve_heads(tmp_path_factory):
    """``gpt2`` as the stand-in Hub serves it: GPT-2's tokenizer and 12 heads a layer, random weights."""
    folder = tmp_path_factory.mktemp("twelve_heads")
    config = GPT2Config(n_layer=2, n_head=12, n_embd=96, n_positions=256, vocab_size=tiny_models.GPT2_VOCAB)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_models.gpt2_tokenizer().save_pretrained(folder)
    hub = hub_standin.AnsweringHub()
    hub.add("gpt2", folder)
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def server(twelve_heads):
    srv = StreamlitServer(env={"HF_ENDPOINT": twelve_heads.endpoint, "NO_PROXY": "127.0.0.1"})
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=LAPTOP)
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    yield tab
    context.close()


def open_page(page, server, query: dict, path: str) -> None:
    open_app(page, server, query, path)
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=120_000)  # a first run loads the model
    wait_for_app(page, timeout=120_000)
    assert_clean(page, server)


def assert_everything_fits(page):
    page.wait_for_selector('[data-testid="stVegaLiteChart"] svg, [data-testid="stVegaLiteChart"] canvas')
    page.wait_for_timeout(500)  # Vega sizes a chart to its container after the first draw
    widths = page.evaluate(WIDTHS)
    assert widths["page"][0] <= widths["page"][1], widths  # no sideways scrolling
    assert widths["main"][0] <= widths["main"][1], widths
    assert [drawn for drawn, column in widths["charts"] if drawn > column] == [], widths["charts"]
    return widths


def test_every_head_of_a_twelve_head_layer_fits_the_column(page, server):
    open_page(page, server, {"model": "gpt2", "layer": "1"}, "attention")
    assert "All 12 heads of layer 1" in page.locator('[data-testid="stMain"]').inner_text()
    widths = assert_everything_fits(page)
    assert min(column for _, column in widths["charts"]) < 600  # the laptop's narrow column, not a wide one
    screenshot(page, "laptop-attention-12-heads")  # where the small maps can be seen (Vega draws them on a canvas)


def test_compare_metrics_show_their_whole_values(page, server):
    open_page(page, server, {"model_b": "demo/tiny-opt"}, "compare")
    assert_everything_fits(page)
    values = page.eval_on_selector_all(
        '[data-testid="stMetricValue"]',
        "els => els.map(e => { const t = e.querySelector('div') || e; return [e.innerText, t.scrollWidth, t.clientWidth]; })")
    assert len(values) == 4 and all(text.strip() for text, _, _ in values), values
    assert [text for text, needed, shown in values if needed > shown] == [], values  # none cut to "0.310 …"
    screenshot(page, "laptop-compare")


def test_the_two_models_side_by_side_line_up(page, server):
    copying = views.PATCHING_PRESETS["Copying (works on the demo models)"]
    open_page(page, server, {"model": "demo/tiny-gpt2", "two_models": "true", "knock_out": "L1.H2",
                             "model_b": "demo/tiny-opt", **vars(copying)}, "cause_and_effect")
    assert_everything_fits(page)
    # Section 5's charts, by column: the n-th map of model A starts where the n-th map of model B does.
    tops = page.evaluate("""() => {
        const heading = [...document.querySelectorAll('h2')].find(h => h.innerText.includes('Two models side by side'));
        const below = heading.getBoundingClientRect().bottom, middle = heading.parentElement.getBoundingClientRect();
        const half = middle.left + middle.width / 2, left = [], right = [];
        for (const chart of document.querySelectorAll('[data-testid="stVegaLiteChart"]')) {
            const box = chart.getBoundingClientRect();
            if (box.top > below) (box.left < half ? left : right).push(Math.round(box.top));
        }
        return [left, right];
    }""")
    left, right = tops
    assert len(left) == len(right) >= 4, tops
    assert [abs(a - b) for a, b in zip(left, right)] == [0] * len(left), tops
    screenshot(page, "laptop-two-models")


def test_the_loss_chart_of_a_long_prompt_has_a_readable_axis(page, server):
    prompt = " ".join(f"word{i % 17} and" for i in range(60))  # about 180 tokens for the 12-head gpt2
    open_page(page, server, {"model": "gpt2", "prompt": prompt}, "cause_and_effect")
    assert_everything_fits(page)
    chart = page.locator('[data-testid="stVegaLiteChart"]', has_text="loss of each next token").first
    labels = chart.locator('.role-axis[aria-label^="X-axis"] .role-axis-label text')
    across = sorted((labels.nth(i).bounding_box() for i in range(labels.count())), key=lambda box: box["x"])
    assert 3 <= len(across) <= 20, len(across)  # the x axis: a few position ticks, not a label per token
    assert all(a["x"] + a["width"] <= b["x"] for a, b in zip(across, across[1:]))  # no two labels overlap
