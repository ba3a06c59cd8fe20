import altair as alt
import streamlit as st

from app import selection, tables, text

st.title("Predictions & logit lens")
st.markdown(
    "After the last layer the model turns its internal state into a probability for every token in its "
    "vocabulary: its guess for what comes **next**. The **logit lens** applies that same final step to the "
    "state after *each* layer, showing what the model 'would say' if it stopped there. **Notice** at which "
    "layer the final guess first appears, and how confident each layer is."
)
name, prompt, lm, cap = selection.selected_model_and_capture()

st.subheader("Next-token guesses")
left, right = st.columns([1, 2])
k = left.slider("How many guesses", 3, 30, 10)
positions = tables.token_labels(cap)
after = right.select_slider("Guess what follows", options=positions, value=positions[-1],
                            help="The last token is the real next-token guess; earlier ones show what the model "
                                 "expected at that point of the prompt (compare with the token that really came).")
position = positions.index(after)
predictions = tables.predictions_table(name, prompt, k, position)
last_token = cap.tokens[position]
if position < cap.seq_len - 1:
    st.caption(f"The token that really came next: “{text.escape_markdown(cap.tokens[position + 1])}”.")
bars = (
    alt.Chart(predictions)
    .mark_bar()
    .encode(
        x=alt.X("probability:Q", axis=alt.Axis(format="%"), title="probability"),
        y=alt.Y("token:N", sort=None, title=f"next token after “{last_token}”", axis=alt.Axis(labelOverlap=False)),
        tooltip=["rank", "token", "id", alt.Tooltip("probability:Q", format=".2%"), alt.Tooltip("logit:Q", format=".2f")],
    )
    .properties(height=22 * len(predictions) + 30)
)
st.altair_chart(bars, width="stretch")
tables.csv_button(predictions, "Download the guesses as CSV", "predictions.csv")

st.subheader("Logit lens")
width = min(16, cap.seq_len)
end = cap.seq_len
if cap.seq_len > width:
    end = st.slider("Show positions up to", width, cap.seq_len, cap.seq_len,
                    help=f"{width} positions at a time: every one costs a read-out per layer.")
lens = tables.logit_lens_table(name, prompt, end - width, end)
order = tables.token_labels(cap)[end - width : end]
base = alt.Chart(lens).encode(
    x=alt.X("position:N", sort=order, title="position (the guess is for the token after it)", axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
    y=alt.Y("layer:O", sort="descending", title="layer (0 = embeddings)"),
)
cells = base.mark_rect().encode(
    color=alt.Color("probability:Q", scale=alt.Scale(scheme="greens", domain=[0, 1]), title="top guess probability"),
    tooltip=["layer", "position", "guess", alt.Tooltip("probability:Q", format=".2%"), "final guess",
             alt.Tooltip("probability of final guess:Q", format=".2%")],
)
labels = base.mark_text(fontSize=10).encode(
    text="guess:N",
    color=alt.condition(alt.datum.probability > 0.5, alt.value("white"), alt.value("black")),
)
st.altair_chart((cells + labels).properties(height=max(220, 40 * (lm.arch.n_layers + 1))), width="stretch")
st.caption(f"Each cell is one layer's best guess. The top row is the model's real output; row 0 reads the "
           f"token embeddings directly. {name} has {lm.arch.n_layers} layers.")
tables.csv_button(lens, "Download the logit lens as CSV", "logit_lens.csv")
