import streamlit as st

from app import attention_views as views
from app import causal_views, charts, frame, keys, navigation, selection, state, tables

frame.page_intro(
    "Attention",
    "Each **head** decides, for every token (a row, the *query*), how much to read from each earlier token "
    "(a column, the *key*); each row sums to 1, and no token can look ahead. **Notice** heads with a clear job: "
    "a diagonal just below the main one is a *previous-token* head; a column at the first token is a head "
    "resting when it has nothing to do; the map below finds *induction* heads, which copy what followed an "
    "earlier occurrence of the current token."
)
name, prompt, lm, cap = selection.selected_model_and_capture()
n_layers, n_heads = lm.arch.n_layers, lm.arch.n_heads


def open_clicked_head():
    clicked = state.clicked_head(st.session_state.get("head_map"), n_layers, n_heads)
    if clicked:
        st.session_state[keys.LAYER], st.session_state[keys.HEAD] = clicked


WINDOW_SIZE = 32


def window_controls(labels: list[str]) -> tables.AttentionWindow:
    """A long prompt's window (the slider, the pinned keys and what the map then shows); a short prompt is
    shown whole."""
    if cap.seq_len <= WINDOW_SIZE:
        return tables.attention_window(0, cap.seq_len - 1, [])
    last = st.slider(
        "Window: last position shown (positions count from 0, as in the labels)", WINDOW_SIZE - 1,
        cap.seq_len - 1, cap.seq_len - 1, key="window", bind="query-params",
        help=f"Long prompts are shown {WINDOW_SIZE} positions at a time so the labels stay readable: the "
             f"map's rows are the {WINDOW_SIZE} positions ending at this one.")
    pinned = st.multiselect(
        "Keep key columns in view", range(cap.seq_len), key="pinned", bind="query-params",
        format_func=labels.__getitem__, placeholder="Pin a token from before the window",
        help="Pinned tokens from before the window stay as columns next to the first token, so you can "
             "follow how much every row of the window reads from them.")
    window = tables.attention_window(last - WINDOW_SIZE + 1, last, pinned)
    kept = ", ".join(map(str, window.kept_keys))
    later = ", ".join(str(p) for p in pinned if p > last)
    st.caption(
        f"The map's rows: positions {window.first}–{last}. Its columns: "
        + (f"{kept} from before the window, kept in view (0 is the first token, where idle heads rest), then "
           if window.kept_keys else "")
        + f"the window's positions {window.first}–{last}, then **rest**: how much of each row's attention goes "
        "to the keys not shown, so that every row adds up to 1."
        + (f" Pinned {later}: after the window, where no row here can look." if later else "")
    )
    return window


def pattern_map(layer: int, head: int, window: tables.AttentionWindow) -> None:
    """The chosen head's map, of a long prompt's window."""
    shown = None if cap.seq_len <= WINDOW_SIZE else window  # a short prompt's map is the whole pattern
    charts.draw(st, views.pattern_chart(name, prompt, layer, head, shown), width="stretch")
    csv_of_pattern(layer, head, shown)


def csv_of_pattern(layer: int, head: int, window: tables.AttentionWindow | None) -> None:
    tables.csv_button(lambda: views.pattern_table(name, prompt, layer, head, window).assign(layer=layer),
                      "Download this head's attention as CSV", f"attention_layer{layer}_head{head}.csv")


def focus_row(layer: int, head: int, labels: list[str], window: tables.AttentionWindow) -> None:
    focus = st.select_slider("Focus token (query)", options=labels, value=labels[window.last], key="focus",
                             bind="query-params")
    query = labels.index(focus)
    row = views.focus_row(name, prompt, layer, head, query)
    if len(row) > tables.TOP_KEYS_FROM:
        top = views.focus_top(name, prompt, layer, head, query)
        st.caption(f"One row of the map, over the whole prompt (not just the window): pick the token that attends. "
                   f"It has {len(row)} keys, too many for a bar each: these are the {len(top)} it reads "
                   "most, labelled with their positions. Notice whether they are the first token (resting), the "
                   "one just before it (a previous-token head) or one far back (copying).")
        charts.draw(st, views.focus_chart(name, prompt, layer, head, query), width="stretch")
        st.caption(f"The other {len(row) - len(top)} keys get {row.weight.drop(top.index).sum():.3f} "
                   "of its attention in total. The download has the whole row.")
    else:
        st.caption("One row of the map, over the whole prompt (not just the window): pick the token that attends. "
                   "Its bars add up to 1.")
        charts.draw(st, views.focus_chart(name, prompt, layer, head, query), width="stretch")
    tables.csv_button(row, "Download this row as CSV", f"attention_layer{layer}_head{head}_query{query}.csv")


def layer_multiples(layer: int, window: tables.AttentionWindow) -> None:
    st.subheader(f"All {n_heads} heads of layer {layer}")
    small = min(len(window.queries), 24)
    first = window.last - small + 1
    charts.draw(st, views.layer_chart(name, prompt, layer, first, window.last), width="stretch")
    if small < len(window.queries):
        st.caption(f"The small maps show positions {first}–{window.last}, the last {small} rows of "
                   "the map above, as rows and columns.")


SCORE_CAPTIONS = {
    "previous token": "Mean attention to the token just before. Near 1: a previous-token head.",
    "induction": "On random tokens shown twice: attention from the second copy to the token after the first "
                 "occurrence. High: an induction head (in-context copying).",
    "first token": "Mean attention on the first token, where idle heads rest.",
    "duplicate token": "Attention on earlier copies of the same token in your prompt.",
    "entropy": "How spread out the attention is (nats); low = focused on few tokens.",
}


def every_head(layer: int, head: int) -> None:
    metric = st.radio("Score", list(SCORE_CAPTIONS), horizontal=True, key=keys.HEAD_METRIC, bind="query-params",
                      help="Induction is measured on random tokens repeated once; the others on your prompt.")
    st.caption(f"{SCORE_CAPTIONS[metric]} Click a cell to open that head above; the head outlined in red is the "
               f"one open (layer {layer}, head {head}).")
    charts.draw(st, views.head_score_chart(name, prompt, metric, layer, head), width="stretch",
                on_select=open_clicked_head, key="head_map")
    if st.button(f"Knock this head out (L{layer}.H{head})", icon=":material/science:",
                 help="Open Cause and effect with this head removed from the run, to see what the model needs it for."):
        chosen = causal_views.head_label(layer, head)
        settings = {keys.KNOCK_OUT: [chosen], keys.LOOK_AT: chosen}
        st.session_state.update(settings)  # the boxes of Cause and effect, not drawn here
        navigation.open_page("pages/cause_and_effect.py", settings)


@st.fragment
def layer_views():
    """Everything that depends on the layer or the window: changing either reruns this, not the page.

    The views of the chosen head are a fragment of their own inside it (``head_views``), writing into the
    places kept for them here, between headings and buttons that no head changes: a change of head redraws
    only what shows the head, and leaves the layer's small multiples, its largest chart, alone.
    """
    left, right = st.columns(2)
    # Bound to the URL: a value outside this model's range (a link, another model) falls back to 0.
    layer = left.selectbox("Layer", range(n_layers), key=keys.LAYER, bind="query-params")
    head_box = right.container()
    labels = tables.token_labels(cap)
    window = window_controls(labels)
    map_box = st.container()
    st.subheader("Where one token looks")
    focus_box = st.container()
    with st.container(key="layer_heads"):
        layer_multiples(layer, window)
    st.subheader("What every head does")
    if cap.seq_len < 2:
        scores_box = None
        st.info("Head scores need a prompt of at least two tokens.")
    else:
        scores_box = st.container()
        tables.csv_button(tables.head_score_table(name, prompt), "Download all head scores as CSV", "head_scores.csv")
    head_views(layer, window, labels, head_box, map_box, focus_box, scores_box)


@st.fragment
def head_views(layer: int, window: tables.AttentionWindow, labels: list[str], head_box, map_box, focus_box, scores_box):
    """The chosen head's map, one row of it and the map of every head's score (``scores_box`` None: no scores
    for a one-token prompt): a change of head, focus token or score reruns only this."""
    head = head_box.selectbox("Head", range(n_heads), key=keys.HEAD, bind="query-params")
    if st.session_state[keys.LAYER] != layer:  # a click on the score map opened a head in another layer
        st.rerun()
    with map_box:
        pattern_map(layer, head, window)
    with focus_box:
        focus_row(layer, head, labels, window)
    if scores_box is not None:
        with scores_box:
            every_head(layer, head)


layer_views()
