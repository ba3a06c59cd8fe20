import streamlit as st

import app_support as app

st.title("Tokens")
st.markdown(
    "A model never sees letters: the prompt is cut into **tokens**, each a number in the model's vocabulary. "
    "GPT-2 and OPT use byte-level pieces: `␣` marks a leading space, and a character split over several "
    "tokens (emoji, many non-Latin scripts) shows as its raw bytes `<0x..>`. **Notice** that OPT starts every "
    "text with `</s>` and numbers the same pieces differently."
)
name, prompt, _, cap = app.current()
if cap.truncated:
    st.warning(f"The prompt has {cap.n_prompt_tokens} tokens; {name} reads at most {cap.seq_len}, so the rest is cut off.")
st.subheader(f"{name}: {cap.seq_len} tokens")
st.markdown(app.token_chips(cap.tokens, cap.input_ids.tolist()), unsafe_allow_html=True)
with st.expander("As a table"):
    table = app.token_table(cap)
    st.dataframe(table, width="stretch", hide_index=True)
    st.download_button("Download as CSV", table.to_csv(index=False).encode(), "tokens.csv", "text/csv")

st.subheader("Two tokenizers on the same text")
app.model_picker("Compare with", "model_b", "Usually an OPT model, to see how its tokens line up with GPT-2's.")
other = st.session_state.model_b
app.capture(other, prompt)
st.caption("Rows pair tokens that cover exactly the same characters; a token with no partner (like OPT's "
           "`</s>`) has an empty cell on the other side.")
st.dataframe(app.aligned_tokens(name, other, prompt), width="stretch", hide_index=True)
