"""Inside a head and information flow in a real browser: the clicks AppTest cannot make (a click on a flow
edge opens that head's page; a click on the head's map picks the query)."""

from __future__ import annotations

from browser_support import wait_for_app
from test_browser import assert_clean, browser, open_app, page, server, title  # noqa: F401 - pytest fixtures

REPEATED = "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp"


def click_middle(page, mark) -> None:
    mark.scroll_into_view_if_needed()
    box = mark.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_a_click_on_an_attention_edge_opens_that_head_inside(page, server):
    open_app(page, server, {"prompt": REPEATED}, path="flow")
    chart = page.locator('[data-testid="stVegaLiteChart"]').filter(has_text="routes to the prediction").first
    edge = chart.locator('g.mark-rule line[aria-label*="what: L1.H"]').first  # Vega labels each mark
    route = edge.get_attribute("aria-label").split("; from: ", 1)[1].split("; weight", 1)[0]  # its from and to
    # Heads that read the same token draw the same line: the click opens the one on top.
    same = chart.locator(f'g.mark-rule line[aria-label*="what: L1.H"][aria-label*="from: {route}"]')
    heads = {label.split("what: L1.H", 1)[1][0] for label in same.evaluate_all("els => els.map(e => e.ariaLabel)")}
    click_middle(page, edge)
    page.wait_for_url("**/inside?*")
    wait_for_app(page)
    assert title(page) == "Inside a head and an MLP"
    assert "layer=1" in page.url and any(f"head={head}" in page.url for head in heads), (page.url, heads)
    assert_clean(page, server)


def test_a_click_on_a_row_of_the_map_picks_the_query(page, server):
    open_app(page, server, {"prompt": REPEATED, "layer": "1", "head": "2"}, path="inside")
    chart = page.locator('[data-testid="stVegaLiteChart"]').filter(has_text="click a row to pick the query").first
    cell = chart.locator('g.mark-rect path[aria-label*="query: 20 in"]').first
    click_middle(page, cell)
    page.wait_for_url("**query=20*")
    wait_for_app(page)
    assert "“20 in”" in page.locator('[data-testid="stMain"]').inner_text()
    assert_clean(page, server)
