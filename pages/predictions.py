import streamlit as st

from app import charts, frame, lens_views, prediction_views, selection, tables, text

frame.page_intro(
    "Predictions & logit lens",
    "After the last layer the model turns its internal state into a probability for every token in its "
    "vocabulary: its guess for what comes **next**. The **logit lens** applies that same final step to the "
    "state after *each* layer, showing what the model 'would say' if it stopped there. **Notice** at which "
    "layer the final guess first appears, and how confident each layer is. The **tuned lens** reads the same "
    "layers after a small correction trained for each one, and shows where the logit lens misleads."
)
name, prompt, lm, cap = selection.selected_model_and_capture()
labels = tables.token_labels(cap)
LENS_WIDTH = 16  # positions in the lens at a time: every one costs a read-out per layer


def inspect_clicked_position():
    """A click on a lens cell inspects that position (the event comes from the browser: check it)."""
    try:
        clicked = st.session_state["lens_map"]["selection"]["clicked"][0]["position"]
    except (KeyError, IndexError, TypeError):
        return
    if clicked in labels:
        st.session_state.position = labels.index(clicked)


st.subheader("Next-token guesses")
left, right = st.columns([1, 2])
k = left.slider("How many guesses", 3, 30, 10, key="k", bind="query-params")
position = right.select_slider(
    "Guess what follows", options=range(cap.seq_len), value=cap.seq_len - 1, format_func=labels.__getitem__,
    key="position", bind="query-params",
    help="The last token is the real next-token guess; earlier ones show what the model expected at that point "
         "of the prompt (compare with the token that really came). The logit lens below marks the same position.",
)
if position < cap.seq_len - 1:
    st.caption(f"The token that really came next: “{text.escape_markdown(cap.tokens[position + 1])}”.")
charts.draw(st, prediction_views.guesses_chart(name, prompt, k, position), width="stretch")
tables.csv_button(lambda: tables.predictions_table(name, prompt, k, position), "Download the guesses as CSV",
                  "predictions.csv")

st.subheader("Logit lens and tuned lens")
st.markdown(
    "Each column is a position of the prompt, each row what the model would guess **after** that layer. "
    "The word in a cell is that layer's own top guess; its **colour** is how much probability the layer already "
    "gives to the model's **final answer** at that position (the top row). **Notice** the row where a column "
    "turns dark: that is where the answer forms."
)
tuned = lens_views.reads_through_tuned_lens(name)
start, end = prediction_views.lens_window(cap.seq_len, position, LENS_WIDTH)
charts.draw(st, prediction_views.lens_chart(name, prompt, start, end, tuned, position), width="stretch",
            on_select=inspect_clicked_position, key="lens_map")
st.caption(
    f"The top row is the model's real output; {name} has {lm.arch.n_layers} layers. "
    + ("Row 0, in grey, reads the token embeddings before any layer has worked on them: through the tuned lens, the "
       "best guess from the current token alone. " if tuned else
       "Row 0, in grey, reads the token embeddings before any layer has worked on them, so its guess mostly echoes "
       "the input token itself: it says nothing about what the model predicts. ")
    + "The position outlined in red is "
    "the one inspected above; click a column to inspect another. Hover a cell for the whole token."
    + (f" The lens shows {LENS_WIDTH} positions at a time, here {start}–{end - 1} of 0–{cap.seq_len - 1}: move "
       "“Guess what follows” to see the others." if end - start < cap.seq_len else "")
)
shown_lens = lens_views.TUNED if tuned else lens_views.LOGIT
tables.csv_button(lambda: tables.logit_lens_table(name, prompt, start, end, tuned),
                  f"Download the {shown_lens} as CSV", f"{shown_lens.replace(' ', '_')}.csv")

st.subheader("Where the logit lens misleads")
st.markdown(
    f"How far each layer's guess after “{text.escape_markdown(cap.tokens[position])}” is from the model's final one (KL, 0 = the "
    "same distribution), read through each lens. **Notice** the layers where the tuned lens is much closer: there the "
    "logit lens under-reads what the layer already knows, or reads a guess the model does not hold."
)
lens_views.draw_lens_comparison(name, prompt, position)
