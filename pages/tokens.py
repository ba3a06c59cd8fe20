import streamlit as st

from app import comparison, frame, selection, state, tables, text

frame.page_intro(
    "Tokens",
    "A model never sees letters: the prompt is cut into **tokens**, each a number in the model's vocabulary. "
    "GPT-2 and OPT use byte-level pieces: `␣` marks a leading space, and a character split over several "
    "tokens (emoji, many non-Latin scripts) shows as its raw bytes `<0x..>`. **Notice** that OPT starts every "
    "text with `</s>` and numbers the same pieces differently."
)
name, prompt = state.chosen_model("model"), state.chosen_prompt()
tokenized = selection.tokens_on(name, prompt)  # this page only tokenizes: no model runs
find = ""
if tokenized.seq_len > text.FOLD_TOKENS:
    find = st.text_input("Find a token", max_chars=50, placeholder="e.g. ␣the",
                         help="Outlines every chip, in both rows, whose text contains this (␣ is a space).")


def show_chips(model_name, tokens):
    found = sum(find.casefold() in token.casefold() for token in tokens.tokens) if find else 0
    st.markdown(f"**{text.escape_markdown(model_name)}**: {tokens.seq_len} tokens"
                + (f", {found} containing “{text.escape_markdown(find)}” (outlined)" if find else ""))
    # token_chips escapes every piece of the prompt: only the chips' own markup is HTML.
    chips = text.token_chips(tokens, find)
    box = st.container(height=260) if tokens.seq_len > text.FOLD_TOKENS else st.container()
    box.markdown(chips, unsafe_allow_html=True)


show_chips(name, tokenized)
st.caption("Each chip is one token; the small number is its id in the vocabulary. Hover a chip to see its id.")
with st.expander("As a table"):
    table = tables.token_table(tokenized)
    st.dataframe(table, width="stretch", hide_index=True)
    tables.csv_button(table, "Download as CSV", "tokens.csv")

st.subheader("Two tokenizers on the same text")
other = state.model_box("Compare with", "model_b", "Usually an OPT model, to see how its tokens line up with "
                        "GPT-2's; type any Hugging Face model ID and press Enter.")
show_chips(other, selection.tokens_on(other, prompt))
st.caption("Below, rows pair tokens that cover exactly the same characters; a token with no partner (like "
           "OPT's `</s>`, or a word the two tokenizers cut differently) has an empty cell on the other side.")
aligned = comparison.aligned_tokens(name, other, prompt)
st.dataframe(aligned, width="stretch", hide_index=True)
tables.csv_button(aligned, "Download the aligned tokens as CSV", "aligned_tokens.csv")
