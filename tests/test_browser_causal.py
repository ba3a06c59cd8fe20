"""Cause and effect in a real browser: the links that open it from other pages (AppTest 1.67 cannot follow
st.switch_page through the app's frame), and a click on its head map."""

from __future__ import annotations

from browser_support import wait_for_app
from playwright.sync_api import expect
from test_browser import assert_clean, browser, open_app, page, server, title  # noqa: F401 - pytest fixtures


def knocked_out(page) -> str:
    return page.locator('[data-testid="stMultiSelect"]').first.inner_text()


def test_knock_this_head_out_opens_cause_and_effect_with_that_head(page, server):
    open_app(page, server, {"layer": "0", "head": "1"}, path="attention")
    page.get_by_role("button", name="Knock this head out (L0.H1)").click()
    page.wait_for_url("**/cause_and_effect?*")
    wait_for_app(page)
    assert title(page) == "Cause and effect" and "L0.H1" in knocked_out(page)
    assert_clean(page, server)


def test_break_the_circuit_opens_with_the_previous_token_head_out_and_a_copying_head_in_view(page, server):
    open_app(page, server)
    page.get_by_role("button", name="Try it").nth(5).click()  # "Break the circuit upstream"
    page.wait_for_url("**/cause_and_effect?*")
    wait_for_app(page)
    assert title(page) == "Cause and effect" and "L0.H1" in knocked_out(page)  # the card's previous-token head
    assert "look_at=L1.H2" in page.url and "knock_out=L0.H1" in page.url  # a link that reopens the experiment
    assert_clean(page, server)


def test_a_click_on_the_head_effect_map_knocks_that_head_out(page, server):
    open_app(page, server, path="cause_and_effect")
    chart = page.locator('[data-testid="stVegaLiteChart"]').filter(has_text="knocking out one head").first
    chart.scroll_into_view_if_needed()
    cell = chart.locator('g.mark-rect path[aria-label*="name: L0.H3"]').first  # Vega labels each cell
    box = cell.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**knock_out=L0.H3*")
    wait_for_app(page)
    assert "L0.H3" in knocked_out(page)
    assert_clean(page, server)


def test_knock_this_neuron_out_opens_cause_and_effect_with_that_neuron(page, server):
    open_app(page, server, {"mlp_layer": "1", "neuron": "17"}, path="inside")
    button = page.get_by_role("button", name="Knock this neuron out (L1.N17)")
    button.scroll_into_view_if_needed()
    button.click()
    page.wait_for_url("**/cause_and_effect?*")
    wait_for_app(page)
    assert title(page) == "Cause and effect" and "knock_out_neurons=L1.N17" in page.url
    # Waited for, not read once: in one CI run the box was read empty right after the switch's first run
    # (the link already held the neuron); a box that stays empty still fails here.
    expect(page.get_by_role("textbox", name="MLP neurons to knock out")).to_have_value("L1.N17", timeout=10_000)
    assert_clean(page, server)
