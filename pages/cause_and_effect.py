import streamlit as st

import opt_lens
from app import causal_charts, causal_runs as runs
from app import causal_views as views
from app import charts, frame, keys, selection, state, tables
from app.caches import hub_online, shared_model
from app.text import escape_markdown

frame.page_intro(
    "Cause and effect",
    "The other pages show what a model computes; this one tests what it **needs**. An *intervention* changes one "
    "part of the computation and runs the rest as usual: **knock out** a head (remove what it adds), or **patch** "
    "an activation (copy it from a run on another prompt). If the prediction changes, that part caused it; an "
    "attention pattern alone can only suggest it. **Notice** which few parts matter and how much."
)
name, prompt, lm, cap = selection.selected_model_and_capture()
n_layers, n_heads = lm.arch.n_layers, lm.arch.n_heads
options = views.head_options(n_layers, n_heads)
# Heads picked on another model (or typed in a URL) that this model lacks are dropped, not an error.
st.session_state[keys.KNOCK_OUT] = [h for h in st.session_state.get(keys.KNOCK_OUT, []) if h in options]
mlp_options = views.mlp_options(n_layers)
st.session_state.knock_out_mlps = [m for m in st.session_state.get("knock_out_mlps", []) if m in mlp_options]
if st.session_state.get(keys.LOOK_AT) not in options:
    st.session_state.pop(keys.LOOK_AT, None)
if cap.seq_len < 2:
    st.info("These experiments need a prompt of at least two tokens.")
    st.stop()

# ------------------------------------------------------------------------------------------- knock out
st.header("1. Knock out heads")
st.caption("A knocked-out head's output is removed before the layer mixes its heads (set to zero, or to its "
           "average over the prompt); everything else runs as usual. A whole MLP layer can go too, or single MLP "
           "neurons (their activation after the nonlinearity).")
left, middle, neuron_column, right = st.columns([3, 1.5, 1.5, 1])


def look_at_newest_head():
    """The attention view below follows the head just added to the knock-out (the multiselect keeps their order)."""
    if st.session_state[keys.KNOCK_OUT]:
        st.session_state[keys.LOOK_AT] = st.session_state[keys.KNOCK_OUT][-1]


picked = left.multiselect("Heads to knock out", options, key=keys.KNOCK_OUT, bind="query-params",
                          on_change=look_at_newest_head,
                          help="L1.H1 is head 1 of layer 1 (both count from 0). Click a head in the maps below, or "
                               "use “Knock this head out” on the Attention page.")
picked_mlps = middle.multiselect("MLP layers to knock out", mlp_options, key="knock_out_mlps",
                                bind="query-params", help="MLP 0 is the MLP of layer 0: its whole output is removed.")
st.session_state.setdefault(keys.KNOCK_OUT_NEURONS, "")
typed_neurons = neuron_column.text_input(
    "MLP neurons to knock out", key=keys.KNOCK_OUT_NEURONS, bind="query-params", max_chars=300,
    placeholder="e.g. L1.N37, L0.N5", help="L1.N37 is neuron 37 of layer 1's MLP (both count from 0). Use “Knock "
    "this neuron out” on the page inside a head and an MLP, or type labels separated by commas.")
neurons, ignored_neurons = views.parse_neurons(typed_neurons, n_layers, lm.arch.d_mlp)
if ignored_neurons:
    neuron_column.caption(ignored_neurons)
st.session_state.setdefault("ablate_with", "zero")
mode = right.radio("Replace its output by", ["zero", "mean"], key="ablate_with", bind="query-params",
                   help="mean: the head's average output over this prompt, a gentler knock-out that keeps the "
                        "usual offset and removes only what differs between tokens.")
heads = tuple(views.parse_heads(picked, n_layers, n_heads))
mlps = tuple(views.parse_mlps(picked_mlps, n_layers))
if picked and keys.LOOK_AT not in st.session_state:  # a link naming only the heads: show the last one removed
    st.session_state[keys.LOOK_AT] = picked[-1]  # (a look_at in the URL still wins when its box is drawn)
knockout = (heads, mode, mlps, neurons)
after = runs.ablated_capture(name, prompt, *knockout)
loss_before = runs.token_losses(name, prompt)
loss_after = runs.token_losses(name, prompt, *knockout) if heads or mlps or neurons else None
if not heads and not mlps and not neurons:
    st.info("Pick heads, MLP layers or neurons above to see what changes without them.", icon=":material/touch_app:")

st.subheader("Next-token guesses, before and after")
guesses = causal_charts.guesses_table(name, prompt, *knockout)
st.dataframe(guesses, hide_index=True, width="stretch", column_config={
    column: st.column_config.NumberColumn(format="percent") for column in ("p before", "same token after", "p after")
})
st.caption("“same token after” is the probability the knocked-out run gives to the guess on the left.")
tables.csv_button(guesses, "Download the guesses as CSV", "knockout_guesses.csv")

st.subheader("Loss on every token, before and after")
first, second = views.half_means(loss_before)
metrics = st.columns(2)
if loss_after is None:
    metrics[0].metric("Mean loss, first half of the prompt", f"{first:.2f} nats")
    metrics[1].metric("Mean loss, second half", f"{second:.2f} nats")
else:
    first_after, second_after = views.half_means(loss_after)
    metrics[0].metric("Mean loss, first half of the prompt", f"{first_after:.2f} nats",
                      f"{first_after - first:+.2f} nats (was {first:.2f})", delta_color="inverse")
    metrics[1].metric("Mean loss, second half", f"{second_after:.2f} nats",
                      f"{second_after - second:+.2f} nats (was {second:.2f})", delta_color="inverse")
charts.draw(st, causal_charts.loss_chart(name, prompt, *knockout), width="stretch")
st.caption("The loss is −log of the probability the model gave to the token that really came next: low means it "
           "was expected. On a text written twice, the second copy is cheap because the model copies from the "
           "first; knock out the heads that copy and it gets expensive again.")
tables.csv_button(lambda: causal_charts.loss_table(name, prompt, *knockout), "Download the losses as CSV",
                  "knockout_losses.csv")

st.subheader("A head's attention, before and after")
shown = st.selectbox("Head to look at", options, key=keys.LOOK_AT, bind="query-params",
                     help="A knocked-out head still attends; its output is just thrown away. Look at a head of a "
                          "later layer to see whether it still attends the same way without the heads you removed.")
layer, head = views.parse_heads([shown], n_layers, n_heads)[0]
window = min(cap.attention_tokens, after.attention_tokens, 40)
start = cap.attention_tokens - window
columns = st.columns(2)
charts.draw(columns[0], causal_charts.attention_chart(name, prompt, layer, head, start, window, "before"),
            width="stretch")
charts.draw(columns[1], causal_charts.attention_chart(name, prompt, layer, head, start, window, "after", *knockout),
            width="stretch")
if start:
    st.caption(f"The last {window} tokens of the prompt.")

# ------------------------------------------------------------------------------------------- the token


def open_clicked_head():
    clicked = state.clicked_head(st.session_state.get("effects_map"), n_layers, n_heads)
    if clicked:
        st.session_state[keys.KNOCK_OUT] = [views.head_label(*clicked)]
        st.session_state[keys.LOOK_AT] = views.head_label(*clicked)


def which_heads_matter(token_id: int, token: str) -> None:
    st.caption(f"Each cell knocks out that one head and measures how the log-probability of "
               f"“{escape_markdown(token)}” after the whole prompt changes (nats): red heads help the model predict "
               "it, blue heads work against it. Click a cell to knock that head out in section 1.")
    if runs.head_effects(name, prompt, token_id) is None:  # waiting for its button, or refused
        return
    charts.draw(st, causal_charts.head_effects_chart(name, prompt, token_id, heads), width="stretch",
                on_select=open_clicked_head, key="effects_map")
    tables.csv_button(lambda: causal_charts.head_effects_table(name, prompt, token_id),
                      "Download the head effects as CSV", "head_effects.csv")


def who_writes_the_answer(token_id: int, token: str) -> None:
    st.caption(f"Direct logit attribution: how much each part adds, directly, to the logit of "
               f"“{escape_markdown(token)}” at the last position. The model's final state is a sum of what each part "
               "wrote into the residual stream, read through the final norm (its scale frozen at this run's value) "
               "and the unembedding, so the parts add up to the logit. Parts that act only through later parts "
               "show little here.")
    try:
        attribution = runs.attribution(name, prompt, token_id)
    except opt_lens.OptLensError as refusal:
        st.info(escape_markdown(refusal), icon=":material/info:")
        return
    left, right = st.columns([3, 2])
    charts.draw(left, causal_charts.attribution_heads_chart(name, prompt, token_id, heads), width="stretch")
    charts.draw(right, causal_charts.attribution_parts_chart(name, prompt, token_id), width="stretch")
    st.markdown(
        f"embeddings {attribution.embed:+.3f} + heads {float(attribution.heads.sum()):+.3f} + MLPs "
        f"{float(attribution.mlps.sum()):+.3f} + biases {attribution.rest:+.3f} = "
        f"**{views.attribution_sum(attribution):.3f}**; the model's own logit for “{escape_markdown(token)}” is "
        f"**{float(cap.next_logits[token_id]):.3f}**."
    )
    tables.csv_button(lambda: causal_charts.attribution_tables(name, prompt, token_id)[0],
                      "Download the head attribution as CSV", "attribution_heads.csv")


st.header("2. Which heads matter")
st.session_state.setdefault("target", "")
typed = st.text_input("Token to explain (sections 2 and 3)", key="target", bind="query-params", max_chars=40,
                      placeholder="empty: the model's own next-token guess",
                      help="Type the token with its leading space, as in “ Mary”: the views measure one token.")
target = views.answer_token(lm.tokenizer, typed) if typed else None
if target is not None and target.problem:
    st.warning(escape_markdown(target.problem), icon=":material/warning:")
    st.header("3. Who writes the answer")
    st.caption("Type a token that is one token for this model, or leave the box empty.")
else:
    token_id = target.token_id if target is not None else int(cap.next_logits.argmax())
    token = views.token_text(lm.tokenizer, token_id)
    which_heads_matter(token_id, token)
    st.header("3. Who writes the answer")
    who_writes_the_answer(token_id, token)

# ---------------------------------------------------------------------------------------------- patching
PRESETS = views.PATCHING_PRESETS
for key, value in vars(PRESETS[list(PRESETS)[1 if hub_online() else 0]]).items():
    st.session_state.setdefault(key, value)


def load_preset():
    if st.session_state.patch_preset in PRESETS:
        st.session_state.update(vars(PRESETS[st.session_state.patch_preset]))
    # The box only loads: empty again, choosing the same example after editing its prompts loads it again.
    st.session_state.patch_preset = None


def patching_maps(setup: runs.PatchingSetup, limit: float | None = None):
    """The residual-stream and per-head patching maps of one model (``limit``: a colour scale shared with others).
    Drawn in steps: a generator that yields after each map, so that section 5 puts two models' maps in rows."""
    if runs.patching(setup.name, setup.clean, setup.corrupted, setup.answer_id, setup.wrong_id) is None:
        return  # waiting for its button, or refused
    charts.draw(st, causal_charts.resid_patch_chart(setup, limit), width="stretch")
    yield
    charts.draw(st, causal_charts.head_patch_chart(setup, limit), width="stretch")
    yield


def usable(setup: runs.PatchingSetup) -> bool:
    """Say plainly why a model cannot run this patching experiment; True when it can."""
    if setup.problem:
        st.warning(escape_markdown(setup.problem), icon=":material/warning:")
        return False
    if abs(setup.clean_effect) < views.MIN_CLEAN_EFFECT:
        st.warning(f"{escape_markdown(setup.name)} gives about the same logit difference on both prompts "
                   f"({setup.clean_diff:.2f} and {setup.corrupted_diff:.2f}): there is no effect to restore.",
                   icon=":material/warning:")
        return False
    return True


def knock_out_on_the_common_scale(setup: runs.PatchingSetup, picked_heads: tuple[tuple[int, int], ...],
                                  picked_mlps: tuple[int, ...], mode: str) -> None:
    """Section 1's knock-out, measured on the patching prompts: what removing the picked heads and MLP layers
    does to the clean logit difference, as a fraction of the clean effect."""
    if not picked_heads and not picked_mlps:
        st.caption("Nothing knocked out: pick heads or MLP layers to see how much of the clean effect they carry.")
        return
    after = runs.ablated_capture(setup.name, setup.clean, picked_heads, mode, picked_mlps).next_logits  # [vocab]
    after_diff = float(after[setup.answer_id] - after[setup.wrong_id])
    shown = ", ".join([views.head_label(*h) for h in picked_heads] + [views.mlp_label(m) for m in picked_mlps])
    # The unit in the label: a value as long as "+0.01 of the clean effect" was cut off in a half-width column.
    st.metric(f"Knocking out {shown}: change, in clean effects", f"{(after_diff - setup.clean_diff) / setup.clean_effect:+.2f}",
              help="−1: the knock-out undoes the whole difference between the clean and the corrupted "
                             "prompt; 0: it changes nothing.")
    st.caption(f"logit(answer) − logit(wrong) after the clean prompt: {setup.clean_diff:.2f} with every part, "
               f"{after_diff:.2f} without {escape_markdown(shown)} "
               f"({'set to zero' if mode == 'zero' else 'each replaced by its mean over the prompt'}).")


def one_model_on_the_common_scale(setup: runs.PatchingSetup, is_a: bool, mode: str):
    """Section 5's column for one model, every map as a fraction of its own clean effect on -1..1. Drawn in
    steps (a generator yielding after each view, a view that is missing yields too): ``in_rows`` puts step i
    of both models in one row, so the two columns line up whatever each step's height."""
    st.subheader(escape_markdown(setup.name))
    if is_a:  # section 1's choice, shown in a box like model B's
        st.multiselect(f"Heads and MLP layers of {setup.name} knocked out", options + mlp_options,
                       default=picked + picked_mlps, disabled=True, help="Chosen in section 1.")
        picked_heads, picked_layers = heads, mlps
    else:  # model B's heads are numbered its own way: it gets its own picker
        picked_heads, picked_layers = knock_out_in_model_b(setup.name)
    if not usable(setup):
        return
    yield
    knock_out_on_the_common_scale(setup, picked_heads, picked_layers, mode)
    yield
    # Both sweeps (each may wait for its button) before the map of their difference.
    if all(runs.head_effects(setup.name, setup.clean, token_id) is not None
           for token_id in (setup.answer_id, setup.wrong_id)):
        charts.draw(st, causal_charts.knockout_fraction_chart(setup), width="stretch")
    yield
    try:
        direct_heads, direct_parts = causal_charts.direct_heads_chart(setup), causal_charts.direct_parts_chart(setup)
    except opt_lens.OptLensError as refusal:
        st.info(escape_markdown(refusal), icon=":material/info:")
        yield
    else:
        charts.draw(st, direct_heads, width="stretch")
        yield
        charts.draw(st, direct_parts, width="stretch")
    yield
    yield from patching_maps(setup, limit=1.0)


def in_rows(*columns) -> None:
    """Draw views made in steps (generators) side by side: one row of columns per step, each generator advanced
    inside its own column, so that step i of every view starts at the same height."""
    live = list(columns)
    while any(live):
        for i, column in enumerate(st.columns(len(columns))):
            if live[i] is not None:
                with column:
                    if next(live[i], _DONE) is _DONE:
                        live[i] = None


_DONE = object()  # what next() returns for a view with no step left


def draw_all(steps) -> None:
    """A view made in steps, drawn whole in the current container."""
    for _ in steps:
        pass


def knock_out_in_model_b(name_b: str) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Model B's own picker of heads and MLP layers (numbered its own way), bound to the URL."""
    arch = shared_model(name_b).arch
    options_b = views.head_options(arch.n_layers, arch.n_heads) + views.mlp_options(arch.n_layers)
    st.session_state.knock_out_b = [h for h in st.session_state.get("knock_out_b", []) if h in options_b]
    picked_b = st.multiselect(f"Heads and MLP layers of {name_b} to knock out", options_b, key="knock_out_b",
                              bind="query-params",
                              help="Replaced as chosen in section 1 (zero or mean). Heads are numbered per "
                                   "model: the maps below show which of this model's heads matter for the task.")
    return (tuple(views.parse_heads(picked_b, arch.n_layers, arch.n_heads)),
            tuple(views.parse_mlps(picked_b, arch.n_layers)))


@st.fragment
def patching_and_two_models():
    with frame.friendly_errors():
        st.header("4. Patching: where does the difference travel?")
        st.caption("Run the corrupted prompt, but copy one activation from the clean run. If the model then gives "
                   "the clean answer, that activation carried the difference. 1 = the clean behaviour fully restored, "
                   "0 = nothing changed; measured on logit(answer) − logit(wrong) after the last token.")
        st.selectbox("Load an example", list(PRESETS), index=None, key="patch_preset", on_change=load_preset,
                     placeholder="Choose an example pair…")
        left, right = st.columns(2)
        clean = left.text_input("Clean prompt", key="clean", bind="query-params", max_chars=state.MAX_PROMPT_CHARS)
        corrupted = right.text_input("Corrupted prompt (differs in one place)", key="corrupted",
                                     bind="query-params", max_chars=state.MAX_PROMPT_CHARS)
        answer = left.text_input("Answer (what the clean prompt calls for)", key="answer", bind="query-params",
                                 max_chars=40)
        wrong = right.text_input("Wrong token (what the corrupted prompt calls for)", key="wrong",
                                 bind="query-params", max_chars=40)
        setup = runs.patching_setup(name, clean, corrupted, answer, wrong)
        if usable(setup):
            st.caption(f"logit(answer) − logit(wrong): {setup.clean_diff:.2f} after the clean prompt, "
                       f"{setup.corrupted_diff:.2f} after the corrupted one. Positions where the prompts differ "
                       "are labelled with both tokens.")
            draw_all(patching_maps(setup))
            st.caption("**Notice** where the restoring cells sit: in the early rows at the token where the prompts "
                       "differ, in the last row at the last token. The row where they jump from one to the other is "
                       "the layer whose heads carry the difference across; the head map below names them.")

        st.header("5. Two models side by side")
        if not st.toggle("Show model B beside model A", key="two_models", bind="query-params"):
            st.caption("Every map for two models on the same prompts and the same answer text, on one colour scale.")
            return
        name_b = state.model_box("Model B", "model_b", "The model to put beside the sidebar's: any from the list, "
                                 "or a Hugging Face model ID typed in and confirmed with Enter.")
        st.caption("Both models read the patching prompts above; the answer and the wrong token are matched by their "
                   "text through each model's tokenizer (their ids differ). Every map is in the same unit, the "
                   "fraction of the clean effect (clean minus corrupted logit difference), on one scale from −1 to "
                   "1: −1 for a knock-out that undoes the whole effect, 1 for a patch that restores it all. "
                   "**Notice** whether both models do the job with the same kind of head, even where its number "
                   "differs.")
        if name_b == name:
            st.info("Model B is the sidebar's model, so both columns show the same one: choose another model B.",
                    icon=":material/info:")
        setups = [runs.patching_setup(model_name, clean, corrupted, answer, wrong) for model_name in (name, name_b)]
        in_rows(*(one_model_on_the_common_scale(setup, is_a, mode) for setup, is_a in zip(setups, (True, False))))


patching_and_two_models()
