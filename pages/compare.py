import html

import altair as alt
import streamlit as st

from app import architecture_facts, charts, comparison, frame, lens_views, selection, state, tables, text

frame.page_intro(
    "Compare two models",
    "The same prompt through two models, usually GPT-2 and OPT-125M: similar sizes, different training "
    "data and details. Tokens are matched by the characters they cover, predictions by the token text. "
    "**Notice** whether they agree on the next token, at what depth each settles on its answer, and which "
    "heads do the same job in both."
)
left, right = st.columns(2)
name_a, prompt = state.chosen_model("model"), state.chosen_prompt()
left.selectbox("Model A", [name_a], disabled=True, help="The model in the sidebar: change it there.")
with right:
    name_b = state.model_box("Model B", "model_b", "Any model from the list, or a Hugging Face model ID "
                             "(for example facebook/opt-125m) typed in and confirmed with Enter.")
# Model A and model B keep these colours on every chart of the page.
COLOR_A, COLOR_B = "#1f77b4", "#e8710a"


def other_family(name: str) -> str:
    """A model to compare ``name`` with: the demo of the other family, or GPT-2 against OPT."""
    if name in state.DEMO_MODELS:
        return next(other for other in state.DEMO_MODELS if other != name)
    return "gpt2" if name in state.OPT_FAMILY else "facebook/opt-125m"


def use_other_family() -> None:
    st.session_state.model_b = other_family(name_a)


if name_a == name_b:
    st.warning(f"Model A and model B are both {text.escape_markdown(name_a)}: a model compared with itself agrees "
               "everywhere, so this page would show nothing. Pick another model B.", icon=":material/content_copy:")
    st.button(f"Compare with {other_family(name_a)} instead", icon=":material/swap_horiz:", key="other-family",
              on_click=use_other_family)
    st.stop()
st.markdown(f"<span style='color:{COLOR_A}'>■</span> **A: {html.escape(text.escape_markdown(name_a))}** &nbsp; "
            f"<span style='color:{COLOR_B}'>■</span> **B: {html.escape(text.escape_markdown(name_b))}** "
            "(the same colours on every chart below)", unsafe_allow_html=True)
selection.selected_comparison_captures(name_a, name_b, prompt)
result = comparison.compare_models(name_a, name_b, prompt)
MODEL_COLORS = alt.Scale(domain=[name_a, name_b], range=[COLOR_A, COLOR_B])

st.subheader("Next token")
agreement = result.agreement
# Two to a row: four to a row cut "0.310 nats" to "0.310 …" in a laptop's 564-px column.
metrics = [column for _ in range(2) for column in st.columns(2)]
metrics[0].metric("Top-10 overlap", f"{agreement['top-k overlap']:.0%}", help="Share of the top-10 guesses both models make.")
metrics[1].metric("KL(A‖B)", f"{agreement['KL(A‖B)']:.3f} nats", help="How surprised B is by A's guesses (0 = identical).")
metrics[2].metric("KL(B‖A)", f"{agreement['KL(B‖A)']:.3f} nats")
metrics[3].metric("Jensen-Shannon", f"{agreement['Jensen-Shannon']:.3f} nats", help="Symmetric; at most ln 2 ≈ 0.693.")
columns = st.columns(2)
sides = ((columns[0], "A", name_a, result.next_a, COLOR_A), (columns[1], "B", name_b, result.next_b, COLOR_B))
for column, side, name, table, color in sides:
    chart = (
        alt.Chart(table)
        .mark_bar(color=color)
        .encode(
            x=alt.X("probability:Q", axis=alt.Axis(format="%")),
            y=alt.Y("token:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False)),
            opacity=alt.Opacity("guessed:N", title="in the top 10", scale=alt.Scale(
                domain=[comparison.BY_BOTH, comparison.ONLY_HERE], range=[1.0, 0.35])),
            tooltip=["token", alt.Tooltip("probability:Q", format=".2%"), alt.Tooltip("guessed:N", title="in the top 10")],
        )
        .properties(title=f"{side}: {name}", height=260)
    )
    charts.draw(column, chart, width="stretch")
    with column:
        tables.csv_button(table, f"Download model {side}'s guesses as CSV", f"next_tokens_{text.file_safe(name)}.csv")
st.caption(f"KL and Jensen-Shannon compare the two distributions over the {agreement['shared vocabulary']:,} "
           "pieces both vocabularies have (GPT-2's `<|endoftext|>` and OPT's `</s>` both mean 'the text ends here' and "
           f"count as one); {name_a} puts {agreement['outside A']:.1%} and {name_b} "
           f"{agreement['outside B']:.1%} of its probability on pieces the other lacks (left out).")

st.subheader("When does each model settle?")
DEPTH_TITLE = "depth (% of the model's layers passed)"
DEPTH_AXIS = alt.Axis(values=[0, 0.25, 0.5, 0.75, 1], format="%")
DEPTH_TOOLTIP = [alt.Tooltip("model"), alt.Tooltip("depth:Q", format=".0%", title="depth"), "layer", "guess",
                 alt.Tooltip("probability of final guess:Q", format=".2%")]
st.caption("The logit lens at the last position on a common scale: 0 % = the embeddings, 100 % = the model's output "
           "(half of a 12-layer model and half of a 2-layer one are both 50 %). The line shows the probability each "
           "depth gives to the model's own final guess.")
depth = (
    alt.Chart(result.depth)
    .mark_line(point=True)
    .encode(
        x=alt.X("depth:Q", title=DEPTH_TITLE, scale=alt.Scale(domain=[0, 1]), axis=DEPTH_AXIS),
        y=alt.Y("probability of final guess:Q", axis=alt.Axis(format="%")),
        color=alt.Color("model:N", scale=MODEL_COLORS, legend=alt.Legend(orient="top", labelLimit=300)),
        tooltip=DEPTH_TOOLTIP,
    )
)
charts.draw(st, depth, width="stretch")
st.caption("Both logit lenses at the last position, layer by layer on the same depth scale: each cell is that "
           "layer's top guess, darker where it gives more probability to the model's final guess.")
lens_base = alt.Chart(result.depth).encode(
    x=alt.X("from:Q", title=DEPTH_TITLE, scale=alt.Scale(domain=[0, 1]), axis=DEPTH_AXIS),
    x2="to:Q",
    y=alt.Y("model:N", title=None, sort=[name_a, name_b], axis=alt.Axis(
        labelLimit=200, labelFontWeight="bold", labelColor=alt.expr(f"datum.label == '{name_a}' ? '{COLOR_A}' : '{COLOR_B}'"))),
    tooltip=DEPTH_TOOLTIP,
)
lens_cells = lens_base.mark_rect(stroke="white").encode(
    color=alt.Color("probability of final guess:Q", scale=alt.Scale(scheme="greens", domain=[0, 1]),
                    title="probability of final guess"),
)
# A 12-layer model's cells are narrow: Vega cuts each word to its cell, with an ellipsis (the tooltip has it whole).
lens_text = lens_base.mark_text(fontSize=11, limit=alt.expr("scale('x', datum.to) - scale('x', datum.from) - 4")).encode(
    x=alt.X("middle:Q"), text="guess:N",
    color=alt.condition(alt.datum["probability of final guess"] > 0.5, alt.value("white"), alt.value("black")),
)
charts.draw(st, (lens_cells + lens_text).properties(height=150), width="stretch")
settled = comparison.settle_table(result)
st.dataframe(settled, width="stretch", hide_index=True)
tables.csv_button(result.depth, "Download both depth curves as CSV", "depth_curves.csv")

st.subheader("Heads that behave alike")
shared_tokens = (f"the {result.aligned_tokens} shared tokens" if result.head_tokens == result.aligned_tokens
                 else f"the first {result.head_tokens} of the {result.aligned_tokens} shared tokens")
st.caption(f"For each head of A, the head of B whose attention pattern on {shared_tokens} is most similar "
           "(1 = identical). Heads that spread their attention evenly over the earlier tokens look alike without "
           "sharing any job, so each pair is also compared with that **uniform** pattern: *above baseline* is how "
           "much closer the two heads are to each other than the closer of them is to uniform attention. Below: the "
           f"{len(result.head_pairs)} pairs furthest above that baseline; near 0 or below, the match means "
           "little.")
if result.head_pairs.empty:
    st.info("The prompt is too short to compare attention patterns.")
else:
    st.dataframe(result.head_pairs, width="stretch", hide_index=True, column_config={
        column: st.column_config.NumberColumn(format="%.2f") for column in result.head_pairs.columns[2:]})
    tables.csv_button(result.head_pairs, "Download the head pairs as CSV", "head_pairs.csv")

st.subheader("Tokens, aligned")
st.dataframe(result.tokens, width="stretch", hide_index=True)
tables.csv_button(result.tokens, "Download the aligned tokens as CSV", "aligned_tokens.csv")

st.subheader("Architecture differences")
table, _, errors = architecture_facts.architecture_table([name_a, name_b])
for error in errors:
    st.warning(error)
differences = table[table.nunique(axis=1) > 1]
if differences.empty:
    st.info("The two architectures are identical in every listed fact.")
else:
    st.caption("Only the facts where the two models differ; the Architecture page shows them all.")
    st.dataframe(differences, width="stretch")
    tables.csv_button(differences, "Download the differences as CSV", "architecture_differences.csv", index=True)

lens_views.draw_two_models(name_a, name_b, prompt, MODEL_COLORS)
