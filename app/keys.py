"""The widget keys one part of the app writes for another, named once.

Each is also the widget's URL parameter (``bind="query-params"``): a lesson step or a button on one page sets
the boxes of another page through these names, and the page that draws the boxes reads the same names.
"""

MODEL = "model"  # the sidebar's model box
PROMPT = "prompt"  # the sidebar's prompt box
PRESENT = "present"  # the sidebar's presentation-mode switch
SIDEBAR = (MODEL, PROMPT, PRESENT)  # drawn on every page: a page switch must keep them in the URL

LAYER = "layer"  # Attention: the head shown
HEAD = "head"
HEAD_METRIC = "head_metric"  # Attention: the score the head map shows
KNOCK_OUT = "knock_out"  # Cause and effect: the heads knocked out
KNOCK_OUT_NEURONS = "knock_out_neurons"  # Cause and effect: the MLP neurons knocked out ("L1.N37, L0.N5")
LOOK_AT = "look_at"  # Cause and effect: the head whose attention is shown before and after

LESSON = "lesson"  # the lesson's step (no widget holds it: kept in the URL by hand)
