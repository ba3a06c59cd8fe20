"""opt_lens: look inside small language models. The entry point: shared sidebar, then the chosen page."""

import streamlit as st

from app import frame, navigation

frame.configure_server()
st.set_page_config(page_title="opt_lens", page_icon=":material/search:", layout="wide")
frame.run_frame(st.navigation(navigation.app_pages()))
