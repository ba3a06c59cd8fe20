"""opt_lens: look inside small decoder-only language models (GPT-2, OPT and their relatives).

    lm = opt_lens.load("demo/tiny-gpt2")
    cap = opt_lens.capture(lm, "The cat sat on the")
    cap.pattern(0, 1)  # [query, key]: layer 0, head 1, rebuilt from the recorded query and key states
    opt_lens.logit_lens(lm, cap, position=-1)  # [layer + 1, vocab]

Names are imported on first use, so that ``import opt_lens`` (and the app's first page) does not wait
for torch and transformers.
"""

import importlib
import logging

from .errors import OptLensError
from .names import DEMO_MODELS, validate_name

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "Architecture": "architecture",
    "ModulePaths": "families",
    "describe": "architecture",
    "Capture": "capturing",
    "capture": "capturing",
    "capture_ids": "capturing",
    "Ablation": "ablation",
    "Attribution": "attribution",
    "attribute": "attribution",
    "head_effects": "sweeps",
    "patch_heads": "patching",
    "patch_resid": "patching",
    "token_losses": "lens",
    "Edit": "tracing",
    "Point": "tracing",
    "Trace": "tracing",
    "trace": "tracing",
    "trace_blocks": "tracing",
    "AttentionSteps": "inside",
    "attention_steps": "inside",
    "head_logits": "inside",
    "neurons": "inside",
    "neuron_logits": "inside",
    "FlowGraph": "flow",
    "flow_graph": "flow",
    "Generation": "generation",
    "generate": "generation",
    "LensMap": "lens",
    "Prediction": "lens",
    "logit_lens": "lens",
    "logit_lens_map": "lens",
    "readout": "lens",
    "top_k_next": "lens",
    "TunedLens": "tuned",
    "kl_to_final": "tuned",
    "save_tuned_lens": "tuned",
    "train_tuned_lens": "tuned",
    "tuned_lens": "tuned",
    "tuned_lens_map": "tuned",
    "LoadedModel": "loading",
    "LoadedTokenizer": "loading",
    "describe_pretrained": "loading",
    "load": "loading",
    "load_tokenizer": "loading",
}
# No submodule shares a name with a function above: importing it would replace the function on the package.
_SUBMODULES = {
    "ablation", "anatomy", "architecture", "attention", "attribution", "blocks", "capturing", "compare", "families",
    "flow", "generation", "heads", "hub", "inside", "lens", "loading", "memory", "patching", "surgery", "sweeps",
    "tokens", "tracing", "tuned", "turns",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'opt_lens' has no attribute {name!r}")


__all__ = ["DEMO_MODELS", "OptLensError", "compare", "heads", "validate_name", *_LAZY]
