"""The Streamlit app's support code, one concern per module; pages import the modules they use.

- ``caches``: the byte-bounded caches every student shares, the loaded models and captures in them.
- ``state``: session and URL state, the model lists and pickers, the shared sidebar.
- ``selection``: what the sidebar selects (model, prompt and their capture), with the warning for a cut prompt.
- ``frame``: what every rerun does around a page (logging, friendly errors, the memory note).
- ``text``: Markdown escaping, HTML token chips, file names.
- ``tables``: captures turned into tables (cached per model and prompt) and CSV downloads.
- ``experiments``: the guided experiments of the start page.
- ``comparison``: what the Compare and Tokens pages show about two models side by side.
- ``architecture_facts``: architecture facts of several models as one table.
"""
