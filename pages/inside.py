import streamlit as st

from app import charts, frame, inside_views, keys, navigation, selection, state, tables, text
from opt_lens import OptLensError

frame.page_intro(
    "Inside a head and an MLP",
    "What one attention head computes for one token, step by step with this model's own numbers, and what it "
    "writes; then the MLP neurons that fire most at a token, and what each one writes. **Notice** that a head's "
    "output is just a weighted sum of value vectors, and that its effect on the next token can be read off."
)
name, prompt, lm, cap = selection.selected_model_and_capture()
n_layers, n_heads = lm.arch.n_layers, lm.arch.n_heads
labels = tables.token_labels(cap)
DEMO_NOTICE = {  # measured on the start page's repeated text (checked by tests/test_app_inside.py)
    "demo/tiny-gpt2": (
        "On the start page's repeated text (“banana violin castle … lamp” twice), demo/tiny-gpt2's induction head "
        "L1.H2 at the second “␣river” promotes “␣lamp” most (+2.28 on its logit): the token that followed the first "
        "“␣river”. Across the second copy, that token is among its 10 most promoted at 7 of 10 positions "
        "(demo/tiny-opt's L1.H2: 7 of 10 too)."),
    # Its headline example fails on tiny-opt: a student following it there found "␣lamp" nowhere near the top.
    "demo/tiny-opt": (
        "On the start page's repeated text (“banana violin castle … lamp” twice), demo/tiny-opt's L1.H2 copies "
        "too: at the second “i” it promotes “ol” most, the token that followed the first “i”. But at the second "
        "“␣river”, though it attends most to the first “␣lamp”, it does not promote “␣lamp” (not in its top 10): "
        "where a head looks and what it writes can disagree."),
}
NOTICE = ("An induction head (the Attention page's map finds them) promotes, at a token of a repeated passage, the "
          "token that followed that token's earlier copy: pick a query in the second copy and look for it on top.")


def clicked(key: str, param: str, field: str):
    """The ``field`` of the point a click selected in chart ``key`` (from the browser: the caller checks it)."""
    try:
        return st.session_state[key]["selection"][param][0][field]
    except (KeyError, IndexError, TypeError):
        return None


def pick_clicked_query():
    """A click on the map picks its row as the query."""
    row = clicked("query_map", "row", "query")
    if row in labels:
        st.session_state.query = row


def head_map(layer: int, head: int, query: int) -> None:
    window = inside_views.query_map_window(cap.seq_len, query)
    charts.draw(st, inside_views.query_map_chart(name, prompt, layer, head, window), width="stretch",
                on_select=pick_clicked_query, key="query_map")
    if window.first > 0:
        st.caption(f"Rows: positions {window.first}–{window.last}. Columns: the first token (where idle heads rest), "
                   "those positions, and **rest**: each row's attention on the tokens not shown.")


@st.fragment
def head_section() -> None:
    left, middle = st.columns(2)
    layer = left.selectbox("Layer", range(n_layers), key="layer", bind="query-params")
    head = middle.selectbox("Head", range(n_heads), key="head", bind="query-params")
    focus = st.select_slider("Query token", options=labels, value=labels[-1], key="query", bind="query-params")
    query = labels.index(focus)
    head_map(layer, head, query)
    table, scaling, size = inside_views.steps_table(name, prompt, layer, head, query)
    st.markdown(f"**1.** Each key's score is its key vector · the query vector of “{text.escape_markdown(focus)}”. "
                f"**2.** {scaling_step(scaling)} **3.** The causal mask removes every later token "
                "(they are not listed). **4.** Softmax turns the scaled scores into attention that sums to 1. "
                "**5.** The head's output is the attention-weighted sum of the value vectors, mapped into the "
                f"residual stream by its slice of the output projection: a vector of size {size:.3g}.")
    charts.draw(st, inside_views.steps_chart(name, prompt, layer, head, query), width="stretch")
    st.dataframe(table, hide_index=True, width="stretch")
    tables.csv_button(table, "Download the steps as CSV", f"steps_L{layer}H{head}_q{query}.csv")
    head_writes(layer, head, query)


def scaling_step(scaling: float) -> str:
    if scaling != 1:
        return f"Scores are multiplied by {scaling:.4g}."
    # "multiplied by 1" alone reads as a step the model skips: OPT scales its queries before the dot product.
    return (f"Scores are multiplied by 1 here: this model applies no scaling at this step (OPT, for one, multiplies "
            f"its query vectors by 1/√{lm.arch.d_head} = {lm.arch.d_head ** -0.5:.4g} in the query projection, so "
            "its scores arrive already scaled).")


def head_writes(layer: int, head: int, query: int) -> None:
    st.subheader(f"What L{layer}.H{head} writes at “{labels[query]}”")
    try:
        inside_views.head_writes(name, prompt, layer, head, query)  # a model with no read-out refuses here
    except OptLensError as error:
        why = ("a head's output is rescaled by every later norm before it reaches the logits, so what it writes has "
               "no direct read-out as tokens.")
        st.info(text.escape_markdown(inside_views.refusal(lm, name, error, why)), icon=":material/info:")
        return
    st.caption("Its output read through the final norm (scale frozen) and the unembedding: the tokens whose "
               "logit it raises and lowers most, as direct logit attribution reads it. "
               + DEMO_NOTICE.get(name, NOTICE))
    charts.draw(st, inside_views.written_chart(name, prompt, layer, head, query), width="stretch")


def pick_clicked_neuron():
    """A click on a neuron's bar follows that neuron across the prompt."""
    neuron = clicked("neuron_bars", "cell", "neuron")
    if isinstance(neuron, (int, float)) and neuron == int(neuron) and 0 <= neuron < lm.arch.d_mlp:
        st.session_state.neuron = int(neuron)


@st.fragment
def mlp_section() -> None:
    st.header("Inside an MLP")
    left, right = st.columns(2)
    layer = left.selectbox("MLP layer", range(n_layers), key="mlp_layer", bind="query-params")
    focus = right.select_slider("Token", options=labels, value=labels[-1], key="mlp_token", bind="query-params")
    position = labels.index(focus)
    top = inside_views.top_neurons(name, prompt, layer, position)
    st.caption(f"The {len(top)} neurons (of {lm.arch.d_mlp}) of layer {layer}'s MLP that fire most at "
               f"“{text.escape_markdown(focus)}”, each with the tokens its output pushes up and down there. "
               "Click a bar to follow that neuron across the prompt.")
    charts.draw(st, inside_views.top_neurons_chart(name, prompt, layer, position), width="stretch",
                on_select=pick_clicked_neuron, key="neuron_bars")
    st.dataframe(top, hide_index=True, width="stretch")
    if "promotes" not in top.columns:
        st.info("This model normalises after every block (post-LN), so what a neuron writes has no direct "
                "read-out as tokens.", icon=":material/info:")
    neuron = state.whole_number_box(st, "Neuron", 0, lm.arch.d_mlp - 1, int(top.neuron.iloc[0]), "neuron")
    charts.draw(st, inside_views.neuron_trace_chart(name, prompt, layer, neuron), width="stretch")
    if st.button(f"Knock this neuron out (L{layer}.N{neuron})", icon=":material/science:",
                 help="Open Cause and effect with this neuron knocked out of the run, to see what the model "
                      "needs it for."):
        settings = {keys.KNOCK_OUT_NEURONS: text.neuron_label(layer, int(neuron))}
        st.session_state.update(settings)  # the box of Cause and effect, not drawn here
        navigation.open_page("pages/cause_and_effect.py", settings)


head_section()
mlp_section()
