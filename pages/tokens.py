import streamlit as st

from app import caches, comparison, frame, selection, state, tables, text

frame.page_intro(
    "Tokens",
    "A model never sees letters: the prompt is cut into **tokens**, each a number in the model's vocabulary. "
    "GPT-2 and OPT use byte-level pieces: `␣` marks a leading space, and a character split over several "
    "tokens (emoji, many non-Latin scripts) shows as its raw bytes `<0x..>`. **Notice** that OPT starts every "
    "text with `</s>` and numbers the same pieces differently."
)
name, prompt, _, cap = selection.selected_model_and_capture()


def show_chips(model_name, capture):
    st.markdown(f"**{text.escape_markdown(model_name)}**: {capture.seq_len} tokens")
    # token_chips escapes every piece of the prompt: only the chips' own markup is HTML.
    st.markdown(text.token_chips(capture), unsafe_allow_html=True)


show_chips(name, cap)
st.caption("Each chip is one token; the small number is its id in the vocabulary. Hover a chip to see its id.")
with st.expander("As a table"):
    table = tables.token_table(cap)
    st.dataframe(table, width="stretch", hide_index=True)
    tables.csv_button(table, "Download as CSV", "tokens.csv")

st.subheader("Two tokenizers on the same text")
other = state.model_box("Compare with", "model_b", "Usually an OPT model, to see how its tokens line up with "
                        "GPT-2's; type any Hugging Face model ID and press Enter.")
other_cap = caches.cached_capture(other, prompt)
selection.warn_if_truncated(other, other_cap)
show_chips(other, other_cap)
st.caption("Below, rows pair tokens that cover exactly the same characters; a token with no partner (like "
           "OPT's `</s>`, or a word the two tokenizers cut differently) has an empty cell on the other side.")
aligned = comparison.aligned_tokens(name, other, prompt)
st.dataframe(aligned, width="stretch", hide_index=True)
tables.csv_button(aligned, "Download the aligned tokens as CSV", "aligned_tokens.csv")
