"""opt_lens: look inside small decoder-only language models (GPT-2, OPT and their relatives).

    lm = opt_lens.load("demo/tiny-gpt2")
    cap = opt_lens.capture(lm, "The cat sat on the")
    cap.attention      # [layer, head, query, key]
    opt_lens.logit_lens(lm, cap, position=-1)  # [layer + 1, vocab]
"""

import logging

from . import compare, heads
from .architecture import Architecture, ModulePaths, describe
from .capture import Capture, capture, capture_ids
from .errors import OptLensError
from .lens import LensMap, Prediction, logit_lens, logit_lens_map, readout, top_k_next
from .loading import DEMO_MODELS, LoadedModel, describe_pretrained, load, validate_name

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEMO_MODELS",
    "Architecture",
    "Capture",
    "LensMap",
    "LoadedModel",
    "ModulePaths",
    "OptLensError",
    "Prediction",
    "capture",
    "compare",
    "capture_ids",
    "describe",
    "describe_pretrained",
    "heads",
    "load",
    "logit_lens",
    "logit_lens_map",
    "readout",
    "top_k_next",
    "validate_name",
]
