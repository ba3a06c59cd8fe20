import altair as alt
import streamlit as st

from app import architecture_facts, caches, state, tables

st.title("Architecture")
st.markdown(
    "The numbers that define a model, read from its configuration and module tree (no weights are "
    "downloaded for this page). **Notice** where the models differ: OPT-350m normalises *after* each "
    "sublayer (post-LN) and squeezes its 512-wide word embeddings up to 1024; OPT counts positions from 2."
)
choices = state.default_models()
options = sorted(set(state.DEMO_MODELS + (state.GPT2_FAMILY + state.OPT_FAMILY if caches.hub_online() else [])
                     + [st.session_state.model, *choices]))
defaults = (["gpt2", "facebook/opt-125m", "facebook/opt-350m"] if caches.hub_online() else list(state.DEMO_MODELS))
names = st.multiselect("Models to compare", options, default=[n for n in defaults if n in options], max_selections=5)
typed = state.typed_model_id(st.text_input(
    "Add any Hugging Face model ID", placeholder="facebook/opt-2.7b", max_chars=100,
    help="Only the model's configuration is read, so even a model too large to run here can be described.",
))
if typed and typed not in names:
    names.append(typed)
if not names:
    st.info("Pick at least one model.")
    st.stop()

table, parts, errors = architecture_facts.architecture_table(names)
for error in errors:
    st.warning(error)
if table.empty:
    st.stop()


def highlight_differences(row):
    differs = len(set(row)) > 1
    return ["background-color: #fff3cd" if differs else "" for _ in row]


st.subheader("Side by side")
st.caption("Rows where the models differ are highlighted.")
st.dataframe(table.style.apply(highlight_differences, axis=1), width="stretch", height=35 * len(table) + 40)
tables.csv_button(table, "Download the table as CSV", "architecture.csv", index=True)

st.subheader("Where the parameters live")
st.caption("Embeddings include position embeddings and OPT-350m's projections; most of a large model's "
           "parameters sit in the MLPs, most of a small model's in the embeddings.")
as_share = st.radio("Show", ["share of each model", "number of parameters"], horizontal=True) == "share of each model"
x = (alt.X("parameters:Q", stack="normalize", title="share of parameters", axis=alt.Axis(format="%")) if as_share
     else alt.X("parameters:Q", title="parameters", axis=alt.Axis(format="~s")))
chart = (
    alt.Chart(parts)
    .mark_bar()
    .encode(
        y=alt.Y("model:N", title=None, axis=alt.Axis(labelLimit=250)),
        x=x,
        color=alt.Color("where:N", title="part", scale=alt.Scale(scheme="tableau10")),
        tooltip=["model", "where", alt.Tooltip("parameters:Q", format=",")],
    )
)
st.altair_chart(chart, width="stretch")
