"""One declarative description per model family, keyed by the config's ``model_type``.

A description names where the canonical parts (embed, blocks, attention, MLP, final norm, unembed) live in
the native module tree and which config fields hold the facts the tree cannot show (norm placement,
activation). Everything else is read from the model itself in ``architecture.py``. Adding a family means
adding one ``Family`` here plus a test that builds a tiny random model of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PretrainedConfig


@dataclass(frozen=True)
class Family:
    name: str
    embed: str
    blocks: str
    # Relative to one block. The last MLP module is the one whose output is the MLP's contribution.
    attn: str
    mlp: tuple[str, ...]
    unembed: str
    positions: str | None = None
    final_norm: str | None = None
    project_in: str | None = None
    project_out: str | None = None
    norm: Callable[[PretrainedConfig], str] | None = None
    activation: Callable[[PretrainedConfig], str] | None = None
    d_mlp: Callable[[PretrainedConfig], int] | None = None


GPT2 = Family(
    name="GPT-2",
    embed="transformer.wte",
    positions="transformer.wpe",
    blocks="transformer.h",
    attn="attn",
    mlp=("mlp",),
    final_norm="transformer.ln_f",
    unembed="lm_head",
    norm=lambda config: "pre",
    activation=lambda config: config.activation_function,
    d_mlp=lambda config: config.n_inner or 4 * config.n_embd,
)

OPT = Family(
    name="OPT",
    embed="model.decoder.embed_tokens",
    positions="model.decoder.embed_positions",
    blocks="model.decoder.layers",
    attn="self_attn",
    mlp=("fc1", "fc2"),
    final_norm="model.decoder.final_layer_norm",
    project_in="model.decoder.project_in",
    project_out="model.decoder.project_out",
    unembed="lm_head",
    # OPT-350m sets do_layer_norm_before=False: its blocks normalise after the residual add.
    norm=lambda config: "pre" if config.do_layer_norm_before else "post",
    activation=lambda config: config.activation_function,
    d_mlp=lambda config: config.ffn_dim,
)

FAMILIES: dict[str, Family] = {"gpt2": GPT2, "opt": OPT}
