"""The floor for a head switch (issue 16, item 6): a fragment holding only the Attention page's two select boxes
and one small chart. ``app_speed_memory.py`` switches it, interleaved with the real page, in the same browser."""

import altair as alt
import pandas as pd
import streamlit as st


@st.fragment
def switches() -> None:
    left, right = st.columns(2)
    layer = left.selectbox("Layer", range(12), key="layer", bind="query-params")
    head = right.selectbox("Head", range(12), key="head", bind="query-params")
    cells = pd.DataFrame([(q, k, (q * layer + k * head) % 7) for q in range(8) for k in range(8)],
                         columns=["query", "key", "weight"])
    st.altair_chart(alt.Chart(cells, title=f"L{layer}.H{head}").mark_rect()
                    .encode(x="key:O", y="query:O", color="weight:Q"))


switches()
