"""One declarative description per model family, keyed by the config's ``model_type``.

A description maps the canonical parts (embed, blocks, attention and its output projection, MLP, final
norm, unembed) to native module paths, and names the config fields that hold the facts the module tree
cannot show (norm placement, activation). Everything else is read from the model itself in
``architecture.py``. Adding a family means adding one ``Family`` here plus a test that builds a tiny random
model of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PretrainedConfig


@dataclass(frozen=True)
class ModulePaths:
    """Native dotted paths of the canonical parts; ``attn``, ``attn_out_proj`` and ``mlp`` are relative to one block.

    ``attn_out_proj`` is the linear map that mixes the concatenated head outputs back into the residual
    stream (GPT-2's ``c_proj``, OPT's ``out_proj``): its input holds each head's output in its own slice.
    ``mlp_down`` is the MLP's last linear map (GPT-2's ``mlp.c_proj``, OPT's ``fc2``): its input is the MLP's
    hidden activations after the nonlinearity, one per neuron.
    """

    embed: str
    blocks: str
    attn: str
    attn_out_proj: str
    mlp: tuple[str, ...]
    unembed: str
    positions: str | None = None
    final_norm: str | None = None
    project_in: str | None = None
    project_out: str | None = None
    mlp_down: str | None = None

    def block(self, layer: int) -> str:
        return f"{self.blocks}.{layer}"

    def attn_of(self, layer: int) -> str:
        return f"{self.block(layer)}.{self.attn}"

    def attn_out_proj_of(self, layer: int) -> str:
        return f"{self.block(layer)}.{self.attn_out_proj}"

    def mlp_out_of(self, layer: int) -> str:
        return f"{self.block(layer)}.{self.mlp[-1]}"

    def mlp_down_of(self, layer: int) -> str | None:
        return f"{self.block(layer)}.{self.mlp_down}" if self.mlp_down else None

    def readout(self) -> tuple[str, ...]:
        """Modules that turn the last residual stream into logits, in the order the model applies them."""
        return tuple(p for p in (self.final_norm, self.project_out, self.unembed) if p is not None)


@dataclass(frozen=True)
class Family:
    name: str
    # Where the parts live. Optional parts (positions, final norm, projections) may be absent in one
    # checkpoint of the family and present in another (OPT-350m): they are kept only where the model has them.
    paths: ModulePaths
    norm: Callable[[PretrainedConfig], str]
    activation: Callable[[PretrainedConfig], str]
    d_mlp: Callable[[PretrainedConfig], int]


GPT2 = Family(
    name="GPT-2",
    paths=ModulePaths(
        embed="transformer.wte",
        positions="transformer.wpe",
        blocks="transformer.h",
        attn="attn",
        attn_out_proj="attn.c_proj",
        mlp=("mlp",),
        final_norm="transformer.ln_f",
        unembed="lm_head",
        mlp_down="mlp.c_proj",
    ),
    norm=lambda config: "pre",
    activation=lambda config: config.activation_function,
    d_mlp=lambda config: config.n_inner or 4 * config.n_embd,
)

OPT = Family(
    name="OPT",
    paths=ModulePaths(
        embed="model.decoder.embed_tokens",
        positions="model.decoder.embed_positions",
        blocks="model.decoder.layers",
        attn="self_attn",
        attn_out_proj="self_attn.out_proj",
        # The last MLP module is the one whose output is the MLP's contribution.
        mlp=("fc1", "fc2"),
        final_norm="model.decoder.final_layer_norm",
        project_in="model.decoder.project_in",
        project_out="model.decoder.project_out",
        unembed="lm_head",
        mlp_down="fc2",
    ),
    # OPT-350m sets do_layer_norm_before=False: its blocks normalise after the residual add.
    norm=lambda config: "pre" if config.do_layer_norm_before else "post",
    activation=lambda config: config.activation_function,
    d_mlp=lambda config: config.ffn_dim,
)

FAMILIES: dict[str, Family] = {"gpt2": GPT2, "opt": OPT}
