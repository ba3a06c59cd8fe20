import streamlit as st

from app import experiments, frame, lessons, state, teacher, text
from opt_lens.memory import format_bytes, memory_limit

frame.page_intro(
    "opt_lens: look inside a language model",
    """
A language model reads a text as a list of **tokens**, passes them through a stack of **layers** in which
**attention heads** move information between positions, and ends with a guess for the **next token**.
Each page shows one part of that, computed live from the model you pick in the sidebar, on the prompt
you type there.

| page | what you see |
| --- | --- |
| **Architecture** | how big the model is and how it is built, read from its configuration |
| **Tokens** | how the prompt is cut into tokens, and how GPT-2 and OPT differ |
| **Attention** | where each head looks, and which heads do recognisable jobs |
| **Inside a head and an MLP** | how one head computes its output step by step, and what a head or a neuron writes |
| **Information flow** | the routes from the input tokens through the heads and MLPs to the prediction |
| **Predictions & logit lens** | the next-token guess, and how it forms layer by layer |
| **Watch the model write** | the model continuing your prompt, token by token, and how sure it was of each |
| **Compare two models** | GPT-2 and OPT on the same prompt, side by side |
| **Cause and effect** | test a claim: knock heads out or copy activations between two prompts, and see what changes |

Everything you change (model, prompt, layer, head, page) is kept in the address bar: copy the link to
share exactly the view you are looking at.
"""
)
st.subheader("Things to try")
model = state.chosen_model("model")
st.caption(f"Written for the model in use, {text.escape_markdown(model)}. Each one replaces the prompt in the "
           "sidebar and opens its page; together they make a lesson you can walk step by step.")
steps = experiments.EXPERIMENTS
lessons.step_button(f"Start the lesson ({len(steps)} steps)", 1, "lesson-start", type="primary", icon=":material/school:")
# Two a row: four narrow columns squeeze the text on a laptop.
columns = [column for _ in range(0, len(steps), 2) for column in st.columns(2)]
for index, (column, experiment) in enumerate(zip(columns, steps)):
    experiment = experiment.for_model(model)
    with column.container(border=True, height="stretch", key=f"experiment-{index}"):
        st.markdown(f"**{index + 1}. {experiment.title}**")
        st.markdown(experiment.question)
        st.caption(experiment.notice)
        lessons.step_button("Try it", index + 1, f"try-{index}", icon=":material/play_arrow:")

with st.expander("For teachers: links for a class", icon=":material/co_present:"):
    st.markdown(
        f"""
Every link carries the view it shows. Three more settings help in class:

- `present=true` opens **presentation mode**: larger type and the sidebar folded away, for a projector
  (the *Presentation mode* switch in the sidebar does the same).
- `note=...` puts your own text, up to {teacher.NOTE_LIMIT} characters, at the top of every page, shown
  exactly as typed: say what to look at.
- `lesson=2` opens the lesson at step 2, on that step's page with its prompt and head, whichever page
  the link names.
"""
    )
st.caption(f"Memory this server allows: {format_bytes(memory_limit()[0])}")
