"""Inside a block, per family: where the norms, the value states and the MLP's hidden layer live.

``families.py`` names the parts a capture hooks (blocks, attention, its output projection, the MLP's
output); the views inside a head and an MLP also need the norms around each sublayer, the module whose
output holds the value states, and the MLP's first layer and activation. They are described here, keyed by
the config's ``model_type``, and called directly on the residual stream a capture holds (no hook). A family
without a description is refused with one sentence, and a described one is checked on every use: the
block rebuilt from these parts must give the block output the capture recorded (``inside.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import OptLensError


@dataclass(frozen=True)
class BlockInside:
    """Module paths relative to one block. Norms sit before their sublayer in a pre-LN block and after the
    residual add in a post-LN one (OPT-350m); ``Architecture.norm`` says which."""

    attn_norm: str
    value: str  # the module whose output holds the value states
    # The value states are chunk ``index`` of ``chunks`` equal chunks of that output's last dimension
    # (GPT-2's fused query-key-value projection: (2, 3)); then [kv_head, d_head] per position.
    value_chunk: tuple[int, int]
    mlp_norm: str
    # One module: activation(first(x)); two (a gated MLP): activation(first(x)) * second(x).
    mlp_in: tuple[str, ...]
    activation: str
    mlp_out: str  # its input is the neurons' activations


_LLAMA_LIKE = BlockInside(
    attn_norm="input_layernorm", value="self_attn.v_proj", value_chunk=(0, 1), mlp_norm="post_attention_layernorm",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"), activation="mlp.act_fn", mlp_out="mlp.down_proj",
)

INSIDES: dict[str, BlockInside] = {
    "gpt2": BlockInside(
        attn_norm="ln_1", value="attn.c_attn", value_chunk=(2, 3), mlp_norm="ln_2",
        mlp_in=("mlp.c_fc",), activation="mlp.act", mlp_out="mlp.c_proj",
    ),
    "opt": BlockInside(
        attn_norm="self_attn_layer_norm", value="self_attn.v_proj", value_chunk=(0, 1), mlp_norm="final_layer_norm",
        mlp_in=("fc1",), activation="activation_fn", mlp_out="fc2",
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
}


def inside_of(lm) -> BlockInside:
    """The description of ``lm``'s blocks, or a refusal naming the families opt_lens can open."""
    model_type = lm.model.config.model_type
    if model_type not in INSIDES:
        raise OptLensError(
            f"opt_lens does not know the inside of a '{model_type}' block (its value states and MLP neurons): "
            f"it can open {', '.join(sorted(INSIDES))} models."
        )
    return INSIDES[model_type]
