import html

import streamlit as st

from app import charts, comparison, frame, lens_views, selection, state, tables, text

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
st.markdown(f"<span style='color:{comparison.COLOR_A}'>■</span> **A: {html.escape(text.escape_markdown(name_a))}** "
            f"&nbsp; <span style='color:{comparison.COLOR_B}'>■</span> **B: {html.escape(text.escape_markdown(name_b))}** "
            "(the same colours on every chart below)", unsafe_allow_html=True)
selection.selected_comparison_captures(name_a, name_b, prompt)
result = comparison.compare_models(name_a, name_b, prompt)

st.subheader("Next token")
agreement = result.agreement
# Two to a row: four to a row cut "0.310 nats" to "0.310 …" in a laptop's 564-px column.
metrics = [column for _ in range(2) for column in st.columns(2)]
metrics[0].metric("Top-10 overlap", f"{agreement['top-k overlap']:.0%}", help="Share of the top-10 guesses both models make.")
metrics[1].metric("KL(A‖B)", f"{agreement['KL(A‖B)']:.3f} nats", help="How surprised B is by A's guesses (0 = identical).")
metrics[2].metric("KL(B‖A)", f"{agreement['KL(B‖A)']:.3f} nats")
metrics[3].metric("Jensen-Shannon", f"{agreement['Jensen-Shannon']:.3f} nats", help="Symmetric; at most ln 2 ≈ 0.693.")
columns = st.columns(2)
for column, side, name, table in ((columns[0], "A", name_a, result.next_a), (columns[1], "B", name_b, result.next_b)):
    charts.draw(column, comparison.next_token_chart(name_a, name_b, prompt, side), width="stretch")
    with column:
        tables.csv_button(table, f"Download model {side}'s guesses as CSV", f"next_tokens_{text.file_safe(name)}.csv")
st.caption(f"KL and Jensen-Shannon compare the two distributions over the {agreement['shared vocabulary']:,} "
           "pieces both vocabularies have (GPT-2's `<|endoftext|>` and OPT's `</s>` both mean 'the text ends here' and "
           f"count as one); {name_a} puts {agreement['outside A']:.1%} and {name_b} "
           f"{agreement['outside B']:.1%} of its probability on pieces the other lacks (left out).")

st.subheader("When does each model settle?")
st.caption("The logit lens at the last position on a common scale: 0 % = the embeddings, 100 % = the model's output "
           "(half of a 12-layer model and half of a 2-layer one are both 50 %). The line shows the probability each "
           "depth gives to the model's own final guess.")
charts.draw(st, comparison.depth_chart(name_a, name_b, prompt), width="stretch")
st.caption("Both logit lenses at the last position, layer by layer on the same depth scale: each cell is that "
           "layer's top guess, darker where it gives more probability to the model's final guess.")
charts.draw(st, comparison.depth_lens_chart(name_a, name_b, prompt), width="stretch")
settled = comparison.settle_table(name_a, name_b, prompt)
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
differences, errors = comparison.architecture_differences(name_a, name_b)
for error in errors:
    st.warning(error)
if differences.empty:
    st.info("The two architectures are identical in every listed fact.")
else:
    st.caption("Only the facts where the two models differ; the Architecture page shows them all.")
    st.dataframe(differences, width="stretch")
    tables.csv_button(differences, "Download the differences as CSV", "architecture_differences.csv", index=True)

lens_views.draw_two_models(name_a, name_b, prompt, (comparison.COLOR_A, comparison.COLOR_B))
