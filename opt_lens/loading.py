"""Load a model safely: demo models, local folders, or Hugging Face Hub IDs, never running repository code.

Order of checks for a hub model: the name is a plain model ID; the Hub knows it and lists its files; its
config is a known decoder-only architecture (no custom code); its weights fit the memory this process
may use; only then are the weights downloaded (safetensors preferred, ``.bin`` only through torch's
weights-only loader) and loaded in float32 with opt_lens' recording sdpa attention (eager attention for a model
that bypasses transformers' attention interface), so attention patterns are available.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from . import attention, hub
from .architecture import Architecture, describe
from .errors import OptLensError
from .memory import format_bytes, memory_budget
from .names import DEMO_MODELS, is_local_folder, printable, validate_name
from .turns import FairLock

logger = logging.getLogger(__name__)

BYTES_PER_PARAM = 4  # weights are loaded in float32: CPU kernels and faithful numbers

_CAUSAL_LM_CLASSES = {
    name for names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for name in ((names,) if isinstance(names, str) else names)
}


@dataclass(eq=False)
class LoadedModel:
    name: str
    model: PreTrainedModel  # eval mode, CPU, float32, recording sdpa attention (eager where the interface is bypassed)
    tokenizer: object
    arch: Architecture
    source: str  # "demo", "local" or "hub"
    # One model object serves every student; every run on it takes turns through ``exclusive`` (tracing.py).
    lock: FairLock = field(default_factory=FairLock, repr=False)

    def __repr__(self) -> str:
        return f"LoadedModel({self.name!r}, {self.arch.family}, {self.arch.n_params:,} parameters, {self.source})"

    def exclusive(self) -> FairLock:
        """The context in which a run has the model to itself (hooks on its modules, a reused block call).
        Waiting threads get it in the order they asked for it. Not reentrant; only ``opt_lens.tracing`` takes it."""
        return self.lock

    @property
    def weights_bytes(self) -> int:
        return weights_bytes(self.arch.n_params)


@dataclass(frozen=True)
class LoadedTokenizer:
    """A model's tokenizer and context length, without its weights (``load_tokenizer``)."""

    name: str
    tokenizer: object
    max_positions: int


def weights_bytes(n_params: int) -> int:
    """The memory a model's float32 weights take."""
    return n_params * BYTES_PER_PARAM


def refuse_unless_fits(name: str, n_params: int, room_bytes: int, short_of_room: str) -> None:
    """Refuse model ``name`` when its weights need more than ``room_bytes``; ``short_of_room`` says what the
    room is ("but only 97 MB of memory is free here", or an app's share of it for models)."""
    needed = weights_bytes(n_params)
    if needed > room_bytes:
        raise OptLensError(f"{name} needs about {format_bytes(needed)} for its weights, {short_of_room}. "
                           "Try a smaller model.")


def weights_fit(name: str, arch: Architecture) -> None:
    """Refuse a model whose float32 weights would not fit the memory this process may still use."""
    budget = memory_budget()
    refuse_unless_fits(name, arch.n_params, budget.available_bytes,
                       f"but only {format_bytes(budget.available_bytes)} of memory is free here (limit: "
                       f"{budget.source}, {format_bytes(budget.limit_bytes)})")


def load(
    name_or_path: str,
    *,
    progress: hub.ProgressCallback | None = None,
    allow_local: bool = True,
) -> LoadedModel:
    """Load a demo name (``demo/tiny-gpt2``, ``demo/tiny-opt``), a local folder, or a Hugging Face model ID."""
    name = validate_name(name_or_path, allow_local=allow_local)
    if name in DEMO_MODELS:
        folder, source = DEMO_MODELS[name], "demo"
        if not (folder / "config.json").is_file():
            raise OptLensError(f"The demo model {name} is missing from this installation.")
        return _load_folder(name, folder, _checked_fit(name, folder), source)
    if allow_local and is_local_folder(name):
        folder = Path(name)
        if not (folder / "config.json").is_file():
            raise OptLensError(f"The folder {name} has no config.json, so it is not a saved model.")
        return _load_folder(name, folder, _checked_fit(name, folder, tokenizer_here=True), "local")
    snapshot = hub.fetch_config(name)
    config = _checked_fit(name, snapshot.folder)  # before any weights are downloaded
    hub.fetch_files(snapshot, progress)
    return _load_folder(name, snapshot.folder, config, "hub")


def describe_pretrained(name_or_path: str, *, allow_local: bool = True) -> Architecture:
    """Describe a model by name from its config alone: no weights are downloaded or loaded."""
    name = validate_name(name_or_path, allow_local=allow_local)
    folder = _config_folder(name, allow_local)
    return _described(name, _checked_config(name, folder))


def load_tokenizer(name_or_path: str, *, allow_local: bool = True) -> LoadedTokenizer:
    """A model's tokenizer and context length from its config and tokenizer files alone: no weights are
    downloaded or loaded, so a page that only tokenizes works for any model, even one too large to load.
    The tokenizer is built exactly as ``load`` builds it, so it splits a prompt as the model reads it."""
    name = validate_name(name_or_path, allow_local=allow_local)
    folder = _config_folder(name, allow_local, tokenizer_only=True)
    arch = _described(name, _checked_config(name, folder))
    return LoadedTokenizer(name=name, tokenizer=_tokenizer(name, folder), max_positions=arch.max_positions)


def _config_folder(name: str, allow_local: bool, *, tokenizer_only: bool = False) -> Path:
    """The folder holding a model's config (and, with ``tokenizer_only``, its tokenizer files too)."""
    if name in DEMO_MODELS:
        return DEMO_MODELS[name]
    if allow_local and is_local_folder(name):
        return Path(name)
    snapshot = hub.fetch_config(name)
    if tokenizer_only:
        hub.fetch_tokenizer(snapshot)
    return snapshot.folder


def _checked_fit(name: str, folder: Path, *, tokenizer_here: bool = False) -> PretrainedConfig:
    """The config, once it is sane and its weights fit; ``tokenizer_here``: the folder must hold the tokenizer too,
    checked before the size estimate, which builds the model on the meta device (3 s for 512 layers)."""
    config = _checked_config(name, folder)
    if tokenizer_here:
        _require_tokenizer_files(name, folder)
    weights_fit(name, _described(name, config))
    return config


def _described(name: str, config: PretrainedConfig) -> Architecture:
    """``describe`` on a config from anywhere: transformers may fail in any way on values it does not expect."""
    try:
        return describe(config)
    except OptLensError:
        raise
    except Exception as error:  # noqa: BLE001 - the config is untrusted input; the log keeps the cause
        logger.warning("Building %s from its config failed", name, exc_info=error)
        raise OptLensError(f"The config of {name} is invalid: transformers cannot build a model from it.") from error


def _checked_config(name: str, folder: Path) -> PretrainedConfig:
    """Read the config without running code from the repository, and refuse what is not a decoder-only LM."""
    check_config_file(name, folder / "config.json")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except StrictDataclassError as error:  # a field of the wrong type; the first line names it
        logger.warning("The config of %s is invalid", name, exc_info=error)
        first_line = str(error).partition("\n")[0]
        raise OptLensError(f"The config of {name} is invalid: {printable(first_line, 120)}") from error
    except Exception as error:  # noqa: BLE001 - the config is untrusted input; the log keeps the cause
        logger.warning("The config of %s could not be read", name, exc_info=error)
        raise OptLensError(f"The config of {name} could not be read.") from error
    config.name_or_path = name
    return config


# Config fields that set how much a model builds, and the largest value a real model plausibly has: a
# config beyond them (20,000 layers, a billion-word vocabulary) would take minutes and gigabytes to build
# even on the meta device, so it is refused before anything is built. Llama-3.1-405B has 126 layers,
# 128 heads, 16,384 wide with a 53,248-wide MLP; Gemma's vocabulary is 256,000; positions reach 10^6.
SIZE_LIMITS = {
    **dict.fromkeys(("n_layer", "num_hidden_layers", "num_layers", "n_layers"), 512),
    **dict.fromkeys(("n_head", "num_attention_heads", "num_heads", "num_key_value_heads"), 1024),
    **dict.fromkeys(("num_local_experts", "num_experts", "n_routed_experts"), 1024),  # DeepSeek-V3 has 256
    **dict.fromkeys(
        ("n_embd", "hidden_size", "d_model", "word_embed_proj_dim", "head_dim", "n_inner", "ffn_dim", "intermediate_size"),
        262_144,
    ),
    "vocab_size": 2_097_152,
    **dict.fromkeys(("n_positions", "n_ctx", "max_position_embeddings"), 4_194_304),
}
# layers x width^2 x 12 (attention and MLP) + (vocabulary + positions) x width: a GPT-style estimate of the
# parameter count, to refuse a config whose every field is plausible but whose product is not (OPT-175B: 1.7e11).
MAX_ESTIMATED_PARAMS = 2 * 10**12


def read_json_config(name: str, path: Path) -> dict:
    """A config file's JSON object, refused unread past ``hub.MAX_CONFIG_BYTES`` (a model's, a tuned lens's)."""
    try:
        if path.stat().st_size > hub.MAX_CONFIG_BYTES:
            raise OptLensError(f"The config of {name} is larger than any real model's; it was not read.")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("The config of %s could not be read", name, exc_info=error)
        raise OptLensError(f"The config of {name} could not be read.") from error
    if not isinstance(raw, dict):
        raise OptLensError(f"The config of {name} is not a JSON object, so it could not be read.")
    return raw


def check_config_file(name: str, path: Path) -> dict:
    """Refuse a config that is unreadable, not a known decoder-only model, or asks for an implausible size.

    Reads only the JSON: nothing from the repository runs, and nothing is built. Returns the parsed config.
    """
    raw = read_json_config(name, path)
    for key, kind, wanted in (("architectures", list, "a list"), ("auto_map", dict, "a mapping")):
        if raw.get(key) is not None and not isinstance(raw[key], kind):
            raise OptLensError(f"The config of {name} gives {key} as '{printable(raw[key], 20)}', not {wanted}.")
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        if "auto_map" in raw:
            raise OptLensError(f"{name} needs custom code from its repository, which this tool never runs.")
        raise OptLensError(
            f"{name} is a '{printable(model_type, 40)}' model, which this version of transformers does not know."
        )
    if "auto_map" in raw:
        logger.warning("Ignoring the auto_map of %s: its '%s' model type is built from transformers' own code, "
                       "and code from a repository never runs", name, model_type)
    architectures = raw.get("architectures") or []
    if raw.get("is_encoder_decoder") or (architectures and not set(map(str, architectures)) & _CAUSAL_LM_CLASSES):
        kind = printable(architectures[0] if architectures else model_type)
        raise OptLensError(f"{name} is a {kind}, not a decoder-only text generator (causal language model).")
    _check_sizes(name, raw)
    return raw


def _check_sizes(name: str, raw: dict) -> None:
    sizes = {}
    for key, limit in SIZE_LIMITS.items():
        value = raw.get(key)
        if value is None:  # absent or null: transformers uses the family's default or derives it
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptLensError(f"The config of {name} gives {key} as '{printable(value, 20)}', not a whole number.")
        if not 1 <= value <= limit:
            raise OptLensError(f"The config of {name} asks for {key} = {value}, outside 1 to {limit:,}.")
        sizes[key] = value
    width = _first(sizes, "n_embd", "hidden_size", "d_model")
    heads = _first(sizes, "n_head", "num_attention_heads", "num_heads")
    if width and heads and "head_dim" not in sizes and width % heads:
        raise OptLensError(f"The config of {name} splits a width of {width} into {heads} heads, which does not divide.")
    layers = _first(sizes, "n_layer", "num_hidden_layers", "num_layers", "n_layers") or 1
    width = width or 1
    vocab_and_positions = sizes.get("vocab_size", 0) + (_first(sizes, "n_positions", "max_position_embeddings") or 0)
    estimate = 12 * layers * width**2 + vocab_and_positions * width
    if estimate > MAX_ESTIMATED_PARAMS:
        raise OptLensError(
            f"The config of {name} describes about {estimate:.1e} parameters, far more than any model this tool can open."
        )


def _first(sizes: dict[str, int], *keys: str) -> int | None:
    return next((sizes[k] for k in keys if k in sizes), None)


def _load_folder(name: str, folder: Path, config: PretrainedConfig, source: str) -> LoadedModel:
    has_safetensors = any(folder.glob("*.safetensors"))
    tokenizer = _tokenizer(name, folder)
    attention.register()  # loading is what needs opt_lens' attention function; importing registers nothing
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            config=config,
            dtype=torch.float32,
            # sdpa that records query and key states where the model uses transformers' attention interface, else eager
            attn_implementation=attention.implementation_for(config),
            trust_remote_code=False,
            use_safetensors=has_safetensors or None,
            local_files_only=True,
        )
    except Exception as error:  # noqa: BLE001 - any failure here means unreadable files; the log keeps the cause
        logger.exception("Loading %s from %s failed", name, folder)
        raise OptLensError(f"The files of {name} could not be loaded: they may be corrupt or incomplete.") from error
    model.eval().requires_grad_(False)
    loaded = LoadedModel(name=name, model=model, tokenizer=tokenizer, arch=describe(model), source=source)
    _self_check(loaded)
    logger.info("Loaded %s (%s, %s parameters)", name, source, f"{loaded.arch.n_params:,}")
    return loaded


def _require_tokenizer_files(name: str, folder: Path) -> None:
    if not hub.has_tokenizer(path.name for path in folder.iterdir()):
        # transformers would build an empty tokenizer, and every prompt would then have no tokens.
        raise OptLensError(f"{name} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt).")


def _tokenizer(name: str, folder: Path):
    """The fast tokenizer saved in ``folder`` (no repository code runs)."""
    _require_tokenizer_files(name, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - any failure here means unreadable files; the log keeps the cause
        logger.exception("Loading the tokenizer of %s from %s failed", name, folder)
        raise OptLensError(f"The files of {name} could not be loaded: they may be corrupt or incomplete.") from error
    if not getattr(tokenizer, "is_fast", False):
        raise OptLensError(f"{name} has no fast tokenizer, which the token views need for character offsets.")
    return tokenizer


def _self_check(lm: LoadedModel) -> None:
    """Refuse a model whose detected readout does not reproduce its own logits (the lens would lie)."""
    from .capturing import capture_ids
    from .lens import readout

    ids = torch.arange(min(4, lm.arch.vocab_size, lm.arch.max_positions))  # [seq]
    probe = capture_ids(lm, ids)
    rebuilt = readout(lm, probe.resid[-1, -1])  # [vocab]
    scale = probe.next_logits.abs().max().clamp(min=1.0)
    if not torch.allclose(rebuilt, probe.next_logits, atol=1e-4 * scale.item(), rtol=1e-4):
        raise OptLensError(
            f"{lm.name}'s output head does something this tool cannot reproduce, so its layer views would be wrong."
        )
