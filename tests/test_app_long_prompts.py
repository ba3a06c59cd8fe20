"""The Attention page and the prompt box at long prompts, driven by AppTest offline on the demo models.

The demo models read 128 tokens, so "long" here means past the page's 32-position window and past the 64 keys
from which a focus row shows its top keys; every expected number comes from a capture of the library's own,
outside the app's caches.
"""

import json

import pytest
from test_app import app, assert_clean, chart_rows, chart_title, charts, open_page

import opt_lens

PAGE = "pages/attention.py"
MODEL = "demo/tiny-gpt2"
LONG_PROMPT = "The cat sat on the mat. Then the dog ran to the park, and the cat followed it home. " * 4


@pytest.fixture(scope="module")
def reference():
    """The demo model loaded apart from the app's shared cache, and its capture of the long prompt."""
    lm = opt_lens.load(MODEL)
    return lm, opt_lens.capture(lm, LONG_PROMPT)


def position(label: str) -> int:
    """The position of an axis label ("17 ␣cat")."""
    return int(label.split(" ", 1)[0])


def cap_label(cap, position: int) -> str:
    """The label the page gives a position, from the reference capture's own tokens."""
    return f"{position} {cap.tokens[position]}"


def heatmap(at):
    return next(c for c in charts(at) if chart_title(c).startswith(f"{MODEL} · layer"))


def test_the_window_keeps_the_first_token_and_pinned_keys_and_each_row_sums_to_one(reference):
    _, cap = reference
    assert cap.seq_len > 100  # long enough for a window that starts well after the pinned keys
    at = open_page(app(prompt=LONG_PROMPT, layer="1", head="2", window="90"), PAGE)
    at.multiselect(key="pinned").set_value([7, 30, 110]).run()  # 110 lies after the window: no column
    assert_clean(at)

    first, last = 59, 90  # 32 positions ending at the slider's, both shown
    spec = json.loads(heatmap(at).proto.spec)
    columns = spec["encoding"]["x"]["scale"]["domain"]
    assert columns[:4] == [cap_label(cap, 0), cap_label(cap, 7), cap_label(cap, 30), "⋯"]
    assert [position(c) for c in columns[4:-1]] == list(range(first, last + 1)) and columns[-1] == "rest"

    pattern = cap.pattern(1, 2)  # [query, key], from a capture of our own
    rows = chart_rows(heatmap(at))
    assert sorted({position(r["query"]) for r in rows}) == list(range(first, last + 1))
    for query in range(first, last + 1):
        cells = [r for r in rows if position(r["query"]) == query]
        shown = {position(r["key"]): r["weight"] for r in cells if r["key"] != "rest"}
        assert sorted(shown) == [0, 7, 30, *range(first, query + 1)]
        for key, weight in shown.items():
            assert weight == pytest.approx(float(pattern[query, key]), abs=1e-6), (query, key)
        (rest,) = [r["weight"] for r in cells if r["key"] == "rest"]
        hidden = [k for k in range(query + 1) if k not in shown]
        assert rest == pytest.approx(float(pattern[query, hidden].sum()), abs=1e-6)
        assert all(r["rest"] == rest for r in cells)  # every cell's tooltip says it too
        assert sum(shown.values()) + rest == pytest.approx(1.0, abs=1e-5), query
    caption = next(c.value for c in at.caption if c.value.startswith("The map's rows:"))
    assert "Its columns: 0, 7, 30 from before the window" in caption and "Pinned 110: after the window" in caption


def test_pinned_keys_come_from_the_link_and_a_bad_one_is_dropped(reference):
    _, cap = reference
    link = {"prompt": LONG_PROMPT, "window": "90", "pinned": [cap_label(cap, 12), "12", "999 ␣x", "<b>0</b>"]}
    at = open_page(app(**link), PAGE)
    assert_clean(at)
    assert at.multiselect(key="pinned").value == [12]
    columns = json.loads(heatmap(at).proto.spec)["encoding"]["x"]["scale"]["domain"]
    assert columns[:3] == [cap_label(cap, 0), cap_label(cap, 12), "⋯"]


def test_one_numbering_for_the_slider_the_labels_and_the_focus_token(reference):
    _, cap = reference
    at = open_page(app(prompt=LONG_PROMPT), PAGE)
    assert_clean(at)
    slider = at.slider(key="window")
    # The slider picks the window's last position, counted from 0 like the labels: the default shows the end.
    assert (slider.min, slider.max, slider.value) == (31, cap.seq_len - 1, cap.seq_len - 1)
    assert "last position shown" in slider.label
    at = open_page(app(prompt=LONG_PROMPT, window="40"), PAGE)  # a teacher's link to the window ending at 40
    assert_clean(at)
    queries = json.loads(heatmap(at).proto.spec)["encoding"]["y"]["sort"]
    assert queries == [cap_label(cap, p) for p in range(9, 41)]
    assert at.select_slider(key="focus").value == cap_label(cap, 40)  # the window's last row
    assert any(c.value.startswith("The map's rows: positions 9–40.") for c in at.caption)
    assert any("positions 17–40, the last 24 rows of the map above" in c.value for c in at.caption)


def test_a_long_focus_row_shows_its_top_keys_and_what_the_rest_get(reference):
    _, cap = reference
    query = 100  # 101 keys: more than the 64 a bar each can show
    at = open_page(app(prompt=LONG_PROMPT, layer="1", head="1", focus=cap_label(cap, query)), PAGE)
    assert_clean(at)
    bars = next(c for c in charts(at) if chart_title(c).startswith("Where “"))
    shown = {r["position"]: r["weight"] for r in chart_rows(bars)}
    row = cap.pattern(1, 1)[query, : query + 1]  # [key], from a capture of our own
    expected = row.topk(20)
    assert sorted(shown) == sorted(expected.indices.tolist())
    for key, weight in zip(expected.indices.tolist(), expected.values.tolist()):
        assert shown[key] == pytest.approx(weight, abs=1e-6)
    rest = float(row.sum() - expected.values.sum())
    assert any(f"The other {query + 1 - 20} keys get {rest:.3f} of its attention" in c.value for c in at.caption)

    at = open_page(app(prompt=LONG_PROMPT, layer="1", head="1", focus=cap_label(cap, 40)), PAGE)  # 41 keys
    bars = next(c for c in charts(at) if chart_title(c).startswith("Where “"))
    assert [r["position"] for r in chart_rows(bars)] == list(range(41))  # one bar per key, as before


# A paragraph of prose; repeated, it makes prompts past the old 4,000-character bound.
PROSE = ("The lighthouse keeper climbed the stairs every evening, counting the steps as his father had taught him. "
         "At the top he wiped the salt from the glass, lit the lamp and watched the boats come home one by one. "
         "Some nights the fog rolled in so thick that he could not see the rocks below, and he rang the bell "
         "until his arms ached. ")


def test_a_prompt_past_4000_characters_is_read_whole_and_counted_against_the_context():
    # 5,900 characters, about 1,100 tokens for GPT-2's tokenizer; the demo's small vocabulary cuts it finer.
    prose = PROSE * 18
    n_tokens = len(opt_lens.load(MODEL).tokenizer(prose)["input_ids"])  # the tokenizer's own count
    assert len(prose) > 4000 and n_tokens > 1000
    context = opt_lens.load(MODEL).arch.max_positions
    at = open_page(app(prompt=prose), "pages/predictions.py")
    assert_clean(at)
    assert at.sidebar.text_area[0].value == prose  # whole, not cut at a character bound
    (cut,) = [w.value for w in at.warning if "reads at most" in w.value]
    assert f"The prompt has {n_tokens:,} tokens, but demo/tiny\\-gpt2 reads at most {context}:" in cut
    assert at.sidebar.caption[0].value.startswith(
        f"The prompt is {n_tokens:,} tokens, more than the {context} demo/tiny\\-gpt2 reads: it is cut at the "
        f"context, and every page shows the first {context}.")

    short = "The keeper lit the lamp."
    at.sidebar.text_area[0].set_value(short).run()
    n_short = len(opt_lens.load(MODEL).tokenizer(short)["input_ids"])
    assert at.sidebar.caption[0].value.startswith(f"The prompt is {n_short} of the {context} tokens demo/tiny\\-gpt2 reads.")


def test_a_12000_character_prompt_comes_whole_from_a_link():
    prompt = (PROSE * 40)[:12_000]
    at = open_page(app(prompt=prompt), "pages/predictions.py")
    assert_clean(at)
    assert at.sidebar.text_area[0].value == prompt and at.session_state.prompt == prompt
    n_tokens = len(opt_lens.load(MODEL).tokenizer(prompt)["input_ids"])
    assert at.sidebar.caption[0].value.startswith(f"The prompt is {n_tokens:,} tokens")  # the model got all of it
    longer = open_page(app(prompt=prompt + " And more."), "pages/predictions.py")
    assert longer.sidebar.text_area[0].value == prompt  # past the bound, the box keeps the first 12,000


def test_scoring_every_head_shows_which_layer_it_has_reached(monkeypatch):
    """Issue 20.8: 48 s of "Scoring every head…" with no count on 1,010 tokens; now each layer is counted."""
    from app import tables

    texts = []

    class RecordingBar:
        def progress(self, value, text=""):
            texts.append(text)

        def empty(self):
            texts.append(None)

    monkeypatch.setattr(tables.st, "progress", lambda value, text="": (texts.append(text), RecordingBar())[1])
    tables.head_score_table.clear()
    tables.head_score_table("demo/tiny-opt", "The cat sat on the mat.")
    assert texts[0].startswith("Scoring every head of demo/tiny-opt (8 heads) on ")
    assert [text.rsplit(": ", 1)[-1] for text in texts[1:3]] == ["layer 1 of 2 scored", "layer 2 of 2 scored"]
    assert texts[-1] is None  # the bar goes when the scores are there
