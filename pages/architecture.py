import streamlit as st

import opt_lens
from app import architecture_facts, charts, frame, state, tables, text

frame.page_intro(
    "Architecture",
    "The numbers that define a model, read from its configuration and module tree (no weights are "
    "downloaded for this page). **Notice** the highlighted rows, where the models differ: how many layers and "
    "heads, how wide, how many tokens in the vocabulary and in the context, and where the layer norm sits."
)
MAX_MODELS = 6
SELECTED, TYPED = "architecture_models", "architecture_typed"
if SELECTED not in st.session_state:  # opens on the sidebar's model and the second model
    st.session_state[SELECTED] = list(dict.fromkeys([state.chosen_model("model"), state.chosen_model("model_b")]))
added = st.session_state.setdefault("architecture_added", [])


def add_typed_model() -> None:
    """Add the typed ID to the models shown (several can be added, one after another) and clear the box."""
    typed = st.session_state[TYPED].strip()
    st.session_state[TYPED] = ""
    st.session_state.architecture_refused = None
    if not typed:
        return
    try:
        name = opt_lens.validate_name(typed, allow_local=False)
    except opt_lens.OptLensError as error:
        st.session_state.architecture_refused = str(error)
        return
    if name not in added:
        added.append(name)
    if name not in st.session_state[SELECTED] and len(st.session_state[SELECTED]) < MAX_MODELS:
        st.session_state[SELECTED] = [*st.session_state[SELECTED], name]


options = list(dict.fromkeys([*state.model_options(), state.chosen_model("model"), state.chosen_model("model_b"), *added,
                              *st.session_state[SELECTED]]))
names = st.multiselect("Models to compare", options, key=SELECTED, max_selections=MAX_MODELS,
                       format_func=state.model_label)
st.text_input(
    "Add any Hugging Face model ID", placeholder="facebook/opt-2.7b", max_chars=100, key=TYPED,
    on_change=add_typed_model,
    help="Press Enter to add it; add as many as you like (up to six are shown). Only the model's configuration "
         "is read, so even a model too large to run here can be described.",
)
if st.session_state.get("architecture_refused"):
    st.warning(text.escape_markdown(st.session_state.architecture_refused), icon=":material/warning:")
if not names:
    st.info("Pick at least one model.")
    st.stop()

table, _, errors = architecture_facts.architecture_table(names)
for error in errors:
    st.warning(error)
if table.empty:
    st.stop()

st.subheader("Side by side")
st.caption("Rows where the models differ are highlighted.")
highlights = architecture_facts.difference_highlights(tuple(table.columns))
st.dataframe(table.style.apply(lambda _: highlights, axis=None), width="stretch", height=35 * len(table) + 40)
tables.csv_button(table, "Download the table as CSV", "architecture.csv", index=True)

st.subheader("Where the parameters live")
st.caption("Embeddings include position embeddings and OPT-350m's projections; most of a large model's "
           "parameters sit in the MLPs, most of a small model's in the embeddings.")
as_share = st.radio("Show", ["share of each model", "number of parameters"], horizontal=True) == "share of each model"
# Keyed by the models described (the table's columns): a model whose description failed is left out of both.
charts.draw(st, architecture_facts.parameters_chart(tuple(table.columns), as_share), width="stretch")
