"""The Streamlit app's support code, one concern per module; pages import the modules they use.

- ``caches``: the byte-bounded caches every student shares: loaded models, captures, tokenized prompts.
- ``state``: widgets bound to the URL (model boxes, prompt), the model lists, the shared sidebar.
- ``selection``: what the sidebar selects (model, prompt and their capture), with the warning for a cut prompt.
- ``frame``: what every run does around a page (server policy, friendly errors, sidebar notes), and
  ``page_intro``, the title and introduction every page starts with.
- ``navigation``: the list of pages, in one place.
- ``text``: Markdown escaping, HTML token chips, file names.
- ``tables``: captures turned into tables (cached per model and prompt) and CSV downloads.
- ``lens_views``: the tuned lens beside the logit lens (the switch, each layer's KL through both, where they disagree).
- ``experiments``: the guided experiments of the start page.
- ``comparison``: what the Compare and Tokens pages show about two models side by side.
- ``architecture_facts``: architecture facts of several models as one table.

A new page is a script in pages/ that starts with ``frame.page_intro(title, what_it_shows)`` (which also
lets a deep link reach it on a fresh server) and is listed in ``navigation.app_pages()``.
"""
