import streamlit as st

from app import charts, frame, inside_views, navigation, selection, state, text
from app.caches import cached_capture, shared_model
from opt_lens import OptLensError

frame.page_intro(
    "Information flow",
    "The routes information takes to the model's prediction (after Ferrando & Voita, 2024): starting from the "
    "last token's final state, each state is split into what adds up to it (the state before, each head reading "
    "each earlier token, the MLP), and only the parts that contribute more than the threshold are kept, layer by "
    "layer back to the tokens. **Notice** which earlier tokens feed the prediction, and through which heads: a "
    "thick blue edge from far back is a head copying from there."
)
name, prompt = state.chosen_model("model"), state.chosen_prompt()
threshold = st.slider("Threshold: keep edges that contribute more than this share of a state", 0.01, 0.5, 0.04,
                      0.01, key="threshold", bind="query-params")
two = st.toggle("Show a second model beside it", key="flow_two", bind="query-params")
# Measured at threshold 0.04 on the start page's repeated text (checked by tests/test_app_inside.py).
DEMO_NOTICE = {
    "demo/tiny-gpt2": "On the start page's repeated text demo/tiny-gpt2 predicts “,”, the token that followed "
                      "“␣lamp” the first time, and its thickest edge into the last token is L1.H3 reading “13 ,” "
                      "(0.42 of that state): an induction head copying the answer from after the earlier copy.",
    "demo/tiny-opt": "On the start page's repeated text demo/tiny-opt predicts “.”, not the “,” that followed "
                     "“␣lamp” the first time: its thickest edge into the last token, L1.H2 (0.58 of that state), "
                     "reads “15 ␣ba”, one token past that “,”. A near miss of an induction head: open it.",
}
NOTICE = ("Residual edges (grey) carry most of each state: a state is mostly what it was. The blue edges are the "
          "few heads that move information between tokens for this prediction.")


def head_opener(key: str, model: str, n_layers: int, n_heads: int):
    """The callback of a click on a graph: an attention edge opens its head on the page inside a head."""
    def open_clicked_head() -> None:
        clicked = state.clicked_head(st.session_state.get(key), n_layers, n_heads)
        if clicked:
            layer, head = clicked
            st.session_state.model = model  # the sidebar's box (its query parameter is the widget's to set)
            navigation.ask_to_open("pages/inside.py", {"layer": layer, "head": head})

    return open_clicked_head


def draw_flow(where, model: str, key: str) -> None:
    cap = cached_capture(model, prompt)
    selection.warn_if_truncated(model, cap)
    lm = shared_model(model)
    try:
        _, edges, _ = inside_views.flow_frames(model, prompt, threshold)
    except OptLensError as error:
        why = ("a state is not the sum of the parts that wrote into it (each block's norm rescales that sum), so it "
               "cannot be split into routes.")
        where.info(text.escape_markdown(inside_views.refusal(lm, model, error, why)), icon=":material/info:")
        return
    charts.draw(where, inside_views.routes_chart(model, prompt, threshold), width="stretch", key=key,
                on_select=head_opener(key, model, lm.arch.n_layers, lm.arch.n_heads))
    where.caption(f"{len(edges)} edges kept at {threshold:.2f}. Click a blue (attention) edge to open that head "
                  "inside. " + DEMO_NOTICE.get(model, NOTICE))


if two:
    other = state.model_box("Second model", "model_b", "Any model from the list, or a Hugging Face model ID.")
    left, right = st.columns(2)
    draw_flow(left, name, "flow_a")
    draw_flow(right, other, "flow_b")
else:
    draw_flow(st, name, "flow_a")
