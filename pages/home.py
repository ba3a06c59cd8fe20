import streamlit as st

from app import experiments, text
from opt_lens.memory import format_bytes, memory_limit

st.title("opt_lens: look inside a language model")
st.markdown(
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
| **Predictions & logit lens** | the next-token guess, and how it forms layer by layer |
| **Compare two models** | GPT-2 and OPT on the same prompt, side by side |

Everything you change (model, prompt, layer, head, page) is kept in the address bar: copy the link to
share exactly the view you are looking at.
"""
)
st.subheader("Things to try")
columns = st.columns(len(experiments.EXPERIMENTS))
for index, (column, experiment) in enumerate(zip(columns, experiments.EXPERIMENTS)):
    with column.container(border=True, height="stretch", key=f"experiment-{index}"):
        st.markdown(f"**{experiment.title}**")
        st.caption(experiment.notice)
        if st.button("Try it", key=f"try-{index}", icon=":material/play_arrow:"):
            experiments.start_experiment(experiment)
st.caption("Each one replaces the prompt in the sidebar and opens a page, on the model in use.")
st.caption(f"Model in use: **{text.escape_markdown(st.session_state.model)}** · Memory this server allows: "
           f"{format_bytes(memory_limit()[0])}")
