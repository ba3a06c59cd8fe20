"""Find a model's internal structure and the facts a student should see, from its config and its modules.

A registered ``Family`` (families.py) says where the canonical parts live; every other fact (widths,
projections, position offset, tying, parameter counts) is read off the module tree, so OPT-350m's
512-wide embedding and OPT's position offset of 2 come from the model, not from a table of names.
Families without a description get a generic detection that finds the same parts or says what it missed.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from .attention import capture_path
from .errors import OptLensError
from .families import FAMILIES, Family, ModulePaths
from .surgery import find_module, get_module, path_of

logger = logging.getLogger(__name__)

_GENERIC_ATTN = ("self_attn", "attn", "attention", "self_attention")
_GENERIC_ATTN_OUT_PROJ = ("o_proj", "out_proj", "c_proj", "dense")
_GENERIC_MLP = ("mlp", "feed_forward", "ffn")
_GENERIC_MLP_DOWN = ("down_proj", "c_proj", "dense_4h_to_h", "fc_out", "fc2", "w2")
_GENERIC_FINAL_NORM = ("norm", "ln_f", "final_layer_norm", "final_norm", "final_layernorm")
_GENERIC_POSITIONS = ("wpe", "embed_positions", "position_embeddings")


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    model_class: str
    detection: str  # "family description" or "generic detection"
    attention_capture: str  # how captures get attention patterns: attention.RECORDED or attention.EAGER
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    vocab_size: int
    n_params: int
    max_positions: int
    positional: str
    position_offset: int
    norm: str
    activation: str
    tied_embeddings: bool
    embed_dim: int
    paths: ModulePaths
    param_breakdown: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        facts = {k: v for k, v in asdict(self).items() if k not in ("paths", "param_breakdown")}
        p = self.paths
        facts.update(
            embed_path=p.embed,
            positions_path=p.positions,
            layers_path=p.blocks,
            attn_path=f"{p.blocks}.N.{p.attn}",
            attn_out_proj_path=f"{p.blocks}.N.{p.attn_out_proj}",
            mlp_path=" + ".join(f"{p.blocks}.N.{m}" for m in p.mlp),
            final_norm_path=p.final_norm,
            project_in_path=p.project_in,
            project_out_path=p.project_out,
            unembed_path=p.unembed,
            param_breakdown=dict(self.param_breakdown),
        )
        return facts


def describe(model_or_config) -> Architecture:
    """Describe a loaded model, a ``transformers`` model, or a bare config (weights are never needed)."""
    if isinstance(model_or_config, Architecture):
        return model_or_config
    arch = getattr(model_or_config, "arch", None)
    if isinstance(arch, Architecture):
        return arch
    if isinstance(model_or_config, PretrainedConfig):
        return _describe_module(_meta_model(model_or_config), model_or_config, capture_path(model_or_config))
    if isinstance(model_or_config, nn.Module) and isinstance(getattr(model_or_config, "config", None), PretrainedConfig):
        return _describe_module(model_or_config, model_or_config.config, capture_path(model_or_config))
    raise OptLensError(f"Cannot describe a {type(model_or_config).__name__}: give a model or its config.")


def _meta_model(config: PretrainedConfig) -> nn.Module:
    """Build the model on the meta device: the full module tree and parameter shapes, no memory for weights."""
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as error:
        raise OptLensError(
            f"'{config.model_type}' models are not text generators this tool can open (no causal language-model head)."
        ) from error


def _describe_module(model: nn.Module, config: PretrainedConfig, attention_capture: str) -> Architecture:
    family = FAMILIES.get(config.model_type)
    paths = _family_paths(model, family) if family else _generic_paths(model, config)
    embed = get_module(model, paths.embed)
    unembed = get_module(model, paths.unembed)
    positions = find_module(model, paths.positions)
    d_model = config.hidden_size
    n_heads = config.num_attention_heads
    return Architecture(
        name=getattr(config, "name_or_path", "") or config.model_type,
        family=family.name if family else config.model_type,
        model_class=type(model).__name__,
        detection="family description" if family else "generic detection",
        attention_capture=attention_capture,
        n_layers=len(get_module(model, paths.blocks)),
        n_heads=n_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
        d_model=d_model,
        d_head=getattr(config, "head_dim", None) or d_model // n_heads,
        d_mlp=family.d_mlp(config) if family else _generic_d_mlp(config),
        vocab_size=unembed.weight.shape[0],
        n_params=sum(p.numel() for p in model.parameters()),  # parameters() yields tied weights once
        max_positions=config.max_position_embeddings,
        positional=_positional(model, config, positions),
        position_offset=getattr(positions, "offset", 0),
        norm=family.norm(config) if family else _generic_norm(paths),
        activation=family.activation(config) if family else _generic_activation(config),
        tied_embeddings=unembed.weight is embed.weight,
        embed_dim=embed.weight.shape[1],
        paths=paths,
        param_breakdown=_param_breakdown(model, paths),
    )


def _family_paths(model: nn.Module, family: Family) -> ModulePaths:
    paths = family.paths
    for required in (paths.embed, paths.blocks, paths.unembed):
        if find_module(model, required) is None:
            raise OptLensError(f"This {family.name} model has no '{required}' module, so it cannot be inspected.")
    block0 = get_module(model, paths.block(0))
    for part in (paths.attn, paths.attn_out_proj, *paths.mlp):
        if find_module(block0, part) is None:
            raise OptLensError(f"This {family.name} model's blocks have no '{part}' module.")

    def present(path: str | None) -> str | None:
        # OPT keeps project_in/project_out/final_layer_norm as attributes set to None when absent.
        return path if find_module(model, path) is not None else None

    return dataclasses.replace(
        paths,
        positions=present(paths.positions),
        final_norm=present(paths.final_norm),
        project_in=present(paths.project_in),
        project_out=present(paths.project_out),
    )


def _generic_paths(model: nn.Module, config: PretrainedConfig) -> ModulePaths:
    missing = []
    n_layers = config.num_hidden_layers
    blocks = next(
        (name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers), None
    )
    attn = attn_out_proj = mlp = None
    if blocks is None:
        missing.append(f"a list of {n_layers} blocks")
    else:
        children = dict(get_module(model, f"{blocks}.0").named_children())
        attn = next((n for n in _GENERIC_ATTN if n in children), None)
        mlp = next((n for n in _GENERIC_MLP if n in children), None)
        missing += [what for what, found in (("attention", attn), ("MLP", mlp)) if found is None]
        if attn is not None:
            # Shallowest first: GPT-Neo nests its projection one level down (attn.attention.out_proj).
            inside_attn = sorted((n for n, _ in children[attn].named_modules() if n), key=lambda n: n.count("."))
            out_proj = next((n for n in inside_attn if n.rsplit(".", 1)[-1] in _GENERIC_ATTN_OUT_PROJ), None)
            attn_out_proj = f"{attn}.{out_proj}" if out_proj else None
            missing += ["attention output projection"] * (out_proj is None)
    input_embeddings = model.get_input_embeddings()
    output_embeddings = model.get_output_embeddings()
    embed = path_of(model, input_embeddings) if input_embeddings is not None else None
    unembed = path_of(model, output_embeddings) if output_embeddings is not None else None
    missing += [what for what, found in (("token embedding", embed), ("unembedding", unembed)) if found is None]
    if missing:
        raise OptLensError(
            f"Could not find the {', '.join(missing)} of this '{config.model_type}' model, so it cannot be inspected."
        )
    outside_blocks = [(n, m) for n, m in model.named_modules() if n and not n.startswith(f"{blocks}.")]
    final_norm = next(
        (n for n, m in outside_blocks if n.rsplit(".", 1)[-1] in _GENERIC_FINAL_NORM and "Norm" in type(m).__name__),
        None,
    )
    positions = next(
        (n for n, m in outside_blocks if n.rsplit(".", 1)[-1] in _GENERIC_POSITIONS and isinstance(m, nn.Embedding)),
        None,
    )
    mlp_children = dict(get_module(model, f"{blocks}.0.{mlp}").named_children())
    down = next((n for n in _GENERIC_MLP_DOWN if n in mlp_children), None)
    return ModulePaths(
        embed=embed, blocks=blocks, attn=attn, attn_out_proj=attn_out_proj, mlp=(mlp,), unembed=unembed,
        positions=positions, final_norm=final_norm, mlp_down=f"{mlp}.{down}" if down else None,
    )


def _generic_norm(paths: ModulePaths) -> str:
    # A pre-LN stack leaves the residual stream unnormalised, so it needs a norm after the last block;
    # a post-LN stack normalises inside every block and has none.
    return "pre" if paths.final_norm else "post"


def _generic_activation(config: PretrainedConfig) -> str:
    return getattr(config, "hidden_act", None) or getattr(config, "activation_function", None) or "unknown"


def _generic_d_mlp(config: PretrainedConfig) -> int:
    return (
        getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.hidden_size
    )


def _positional(model: nn.Module, config: PretrainedConfig, positions: nn.Module | None) -> str:
    if positions is not None:
        return "learned"
    if any("rotary" in name for name, _ in model.named_modules()) or getattr(config, "rope_parameters", None):
        return "rotary"
    return "none found"


def _param_breakdown(model: nn.Module, paths: ModulePaths) -> dict[str, int]:
    """Unique parameters by where they live: embeddings, attention, MLP, norms, unembedding (if untied)."""
    owners = {}
    for name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), (name, module, param))
    block_prefix = f"{paths.blocks}."
    embed_like = {p for p in (paths.embed, paths.positions, paths.project_in, paths.project_out) if p}
    breakdown = {"embeddings": 0, "attention": 0, "mlp": 0, "norms": 0, "unembedding": 0, "other": 0}
    for name, module, param in owners.values():
        if name in embed_like:
            part = "embeddings"
        elif name == paths.unembed:
            part = "unembedding"
        elif "Norm" in type(module).__name__:
            part = "norms"
        elif name.startswith(block_prefix):
            inside = name[len(block_prefix):].split(".", 1)[-1]
            part = "attention" if inside.startswith(paths.attn) else "mlp" if inside.startswith(paths.mlp) else "other"
        else:
            part = "other"
        breakdown[part] += param.numel()
    return breakdown
