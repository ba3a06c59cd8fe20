"""The tuned lens (Belrose et al. 2023): each layer's residual stream moved by a trained affine translator
``h + A h + b`` before the model's own readout, so that a middle layer is read as the model would read it.

The logit lens applies the readout to a middle layer as it is, which assumes every layer already speaks the
last layer's "language"; the tuned lens learns, per layer, the small correction that makes that true, trained
to match the model's final distribution (KL). Lenses use the tuned-lens project's published format: a folder
with ``config.json`` (``base_model_name_or_path``, ``d_model``, ``num_hidden_layers``, ``bias``, ...) and
``params.pt`` holding translator ``i`` as ``{i}.weight`` (A, ``[d_model, d_model]``) and ``{i}.bias`` (b).
Translator ``i`` reads row ``i`` of the residual stream (0 = the embeddings): one per block input, none
for the last block's output, which the readout turns into the model's own logits.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError

from . import hub
from .capturing import Capture, capture
from .errors import OptLensError
from .lens import checked_position, readout
from .loading import read_json_config
from .memory import format_bytes, memory_budget
from .names import DEMO_MODELS, printable
from .tracing import readout_with_gradients

logger = logging.getLogger(__name__)

LENS_REPO, LENS_REPO_TYPE, LENS_FOLDER = "AlignmentResearch/tuned-lens", "space", "lens"
CONFIG_FILE, PARAMS_FILE = "config.json", "params.pt"
DEMO_LENS_FOLDER = "tuned_lens"  # beside a demo model's (or a local model's) own files
LENS_TYPE = "linear_tuned_lens"
_PREFIX = "layer_translators."  # how a whole TunedLens module's state names the translators
# A params.pt holds float32 translators and a few kB of pickle; a file far larger is not a lens for this model.
_MAX_FILE_OVERHEAD = 1_000_000

# progress(step, steps, loss) while a lens trains.
TrainProgress = Callable[[int, int, float], None]


@dataclass(frozen=True, eq=False)
class TunedLens:
    """One affine translator per block input of a model: row ``i`` of the residual stream becomes
    ``h + weight[i] @ h + bias[i]`` (``weight[i]`` stored as ``torch.nn.Linear`` stores it, out x in)."""

    base_model: str  # the model the lens was trained on
    weight: torch.Tensor  # [layer, d_model, d_model]
    bias: torch.Tensor  # [layer, d_model]
    source: str  # "demo", "local", "hub" or "trained"

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    @property
    def d_model(self) -> int:
        return self.weight.shape[-1]

    def translate(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Row ``layer`` of the residual stream (``[..., d_model]``) as the tuned lens reads it; the last
        block's output (``layer == n_layers``) needs no translator and comes back as it is."""
        if layer == self.n_layers:
            return h
        return h + h @ self.weight[layer].T + self.bias[layer]  # [..., d_model]

    def nbytes(self) -> int:
        return (self.weight.numel() + self.bias.numel()) * self.weight.element_size()


def tuned_lens_map(lm, cap: Capture, lens: TunedLens, position: int = -1) -> torch.Tensor:
    """``[n_layers + 1, vocab]`` like ``logit_lens``: each layer's logits at ``position`` read through the
    tuned lens, the last row the model's own logits."""
    check_fits(lm, lens)
    column = cap.resid[:, checked_position(position, cap.seq_len)]  # [layer + 1, d_model]
    with torch.inference_mode():
        moved = torch.stack([lens.translate(layer, row) for layer, row in enumerate(column)])  # [layer + 1, d_model]
    return readout(lm, moved)  # [layer + 1, vocab]


def kl_to_final(logits: torch.Tensor) -> torch.Tensor:
    """``[layer + 1, ...]`` KL(final ‖ layer) in nats of a lens's logits ``[layer + 1, ..., vocab]``: how far
    each layer's distribution is from the last row's (0 in the last row)."""
    log_q = torch.log_softmax(logits.double(), dim=-1)  # [layer + 1, ..., vocab]
    log_p = log_q[-1]  # [..., vocab]
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).float()  # [layer + 1, ...]


def check_fits(lm, lens: TunedLens) -> None:
    if (lens.n_layers, lens.d_model) != (lm.arch.n_layers, lm.arch.d_model):
        raise OptLensError(
            f"This tuned lens was made for a model with {lens.n_layers} layers {lens.d_model} wide ({lens.base_model}); "
            f"{lm.name} has {lm.arch.n_layers} layers {lm.arch.d_model} wide."
        )


# --- Loading ----------------------------------------------------------------------------------------------


def tuned_lens(lm, source: str | Path | None = None) -> TunedLens | None:
    """The tuned lens for ``lm``, or None when there is none.

    ``source`` names a folder in the published format. Without it: a demo model's shipped lens (and a local
    model folder's ``tuned_lens/`` subfolder), or for a Hub model the lens the tuned-lens project publishes in
    the Space ``AlignmentResearch/tuned-lens`` under ``lens/<model id>/``, fetched through huggingface_hub and
    its cache (so a lens fetched once loads offline). None means no such lens exists; anything else that
    stops a lens from loading (no connection, a damaged file, a lens for another model) raises OptLensError.
    """
    if source is not None:
        folder = Path(source)
        if not (folder / CONFIG_FILE).is_file() or not (folder / PARAMS_FILE).is_file():
            raise OptLensError(f"The folder {printable(source)} holds no tuned lens ({CONFIG_FILE} and {PARAMS_FILE}).")
        return _read_lens(lm, folder / CONFIG_FILE, folder / PARAMS_FILE, "local", f"the tuned lens in {printable(source)}")
    if lm.source in ("demo", "local"):
        folder = (DEMO_MODELS[lm.name] if lm.source == "demo" else Path(lm.name)) / DEMO_LENS_FOLDER
        if not (folder / CONFIG_FILE).is_file():
            logger.info("No tuned lens beside %s", lm.name)
            return None
        return _read_lens(lm, folder / CONFIG_FILE, folder / PARAMS_FILE, lm.source, f"the tuned lens of {lm.name}")
    return _from_hub(lm)


def _from_hub(lm) -> TunedLens | None:
    """The published lens: under ``lens/<model id>/``, or under the Space's older ``lens/<name>/`` (``opt-125m``
    for ``facebook/opt-125m``) when its config names this model."""
    what = f"the tuned lens of {lm.name}"
    short = lm.name.rsplit("/", 1)[-1]
    for folder in dict.fromkeys((f"{LENS_FOLDER}/{lm.name}", f"{LENS_FOLDER}/{short}")):
        config_path = _hub_file(what, folder, CONFIG_FILE, hub.MAX_CONFIG_BYTES)
        if config_path is None:
            continue
        base = read_json_config(what, config_path).get("base_model_name_or_path")
        if not isinstance(base, str) or base.rsplit("/", 1)[-1] != short:
            logger.info("%s/%s is a lens for %r, not %s", LENS_REPO, folder, base, lm.name)
            continue
        _check_memory(lm, what)  # before the download, as a model's weights
        params_path = _hub_file(what, folder, PARAMS_FILE, _max_file_bytes(lm))
        return None if params_path is None else _read_lens(lm, config_path, params_path, "hub", what)
    logger.info("The tuned-lens project publishes no lens for %s", lm.name)
    return None


def _hub_file(what: str, folder: str, file_name: str, max_bytes: int) -> Path | None:
    """A file of the lens Space through the Hub client and its cache; None when the Space has no such file.

    The Hub is asked once, with the model loading's timeout, before the client downloads: on a failed connection
    the client would try again for half a minute. Without the Hub, the cache's copy; a file larger than
    ``max_bytes`` is refused before it downloads, as a model's weights are.
    """
    url = hf_hub_url(LENS_REPO, file_name, subfolder=folder, repo_type=LENS_REPO_TYPE)
    try:
        size = get_hf_file_metadata(url, timeout=hub.hub_timeout()).size
    except (RemoteEntryNotFoundError, RepositoryNotFoundError) as missing:
        logger.info("No %s/%s in %s: %r", folder, file_name, LENS_REPO, missing)
        return None
    except hub._NETWORK_ERRORS as unreachable:  # the same failures, and messages, as a model's download
        logger.info("Hub unreachable for %s (%r); trying the local cache", what, unreachable)
        return _download(what, folder, file_name, unreachable)
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise hub._refusal(what, error, file_name) from error
    if size is not None and size > max_bytes:
        raise OptLensError(f"The file {file_name} of {what} is {format_bytes(size)}, far more than it can be "
                           f"({format_bytes(max_bytes)} at most); it was not downloaded.")
    return _download(what, folder, file_name)


def _download(what: str, folder: str, file_name: str, unreachable: Exception | None = None) -> Path:
    """The file from the Hub, or with ``unreachable`` (why the Hub could not be asked) from the cache alone."""
    try:
        return Path(hf_hub_download(LENS_REPO, file_name, subfolder=folder, repo_type=LENS_REPO_TYPE,
                                    etag_timeout=hub.hub_timeout(), local_files_only=unreachable is not None))
    except (HfHubHTTPError, *hub._NETWORK_ERRORS, OSError, ValueError) as error:
        raise hub._refusal(what, unreachable or error, file_name) from error


def _read_lens(lm, config_path: Path, params_path: Path, source: str, what: str) -> TunedLens:
    config = read_json_config(what, config_path)
    if config.get("lens_type", LENS_TYPE) != LENS_TYPE:
        raise OptLensError(f"{_capital(what)} is a '{printable(config['lens_type'], 40)}', not a linear tuned lens.")
    shape = (config.get("num_hidden_layers"), config.get("d_model"))
    if shape != (lm.arch.n_layers, lm.arch.d_model):
        raise OptLensError(
            f"{_capital(what)} was made for a model with {printable(shape[0], 12)} layers {printable(shape[1], 12)} wide; "
            f"{lm.name} has {lm.arch.n_layers} layers {lm.arch.d_model} wide."
        )
    _check_size(lm, params_path.stat().st_size, what)
    try:
        state = torch.load(params_path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - an untrusted file: any failure means it is unreadable
        logger.warning("Reading %s from %s failed", what, params_path, exc_info=error)
        raise OptLensError(f"The file {PARAMS_FILE} of {what} could not be read: it may be corrupt or incomplete.") from error
    weight, bias = _translators(state, lm.arch.n_layers, lm.arch.d_model, bool(config.get("bias", True)), what)
    base = config.get("base_model_name_or_path")
    return TunedLens(base_model=base if isinstance(base, str) else lm.name, weight=weight, bias=bias, source=source)


def _capital(what: str) -> str:
    """``what`` ("the tuned lens of gpt2") at the start of a sentence."""
    return what[:1].upper() + what[1:]


def _max_file_bytes(lm) -> int:
    return 2 * _lens_bytes(lm.arch.n_layers, lm.arch.d_model) + _MAX_FILE_OVERHEAD


def _check_size(lm, size: int, what: str) -> None:
    """Refuse a file larger than a lens for ``lm`` can be, or a lens larger than the memory left here."""
    expected = _lens_bytes(lm.arch.n_layers, lm.arch.d_model)
    if size > _max_file_bytes(lm):
        raise OptLensError(f"The file {PARAMS_FILE} of {what} is {format_bytes(size)}, far more than a lens for "
                           f"{lm.name} needs ({format_bytes(expected)}); it was not read.")
    _check_memory(lm, what)


def _check_memory(lm, what: str) -> None:
    expected, budget = _lens_bytes(lm.arch.n_layers, lm.arch.d_model), memory_budget()
    if expected > budget.available_bytes:
        raise OptLensError(f"{_capital(what)} needs about {format_bytes(expected)}, but only "
                           f"{format_bytes(budget.available_bytes)} of memory is free here.")


def _lens_bytes(n_layers: int, d_model: int) -> int:
    return n_layers * (d_model + 1) * d_model * 4  # float32


def _translators(state, n_layers: int, d_model: int, has_bias: bool, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[layer, d, d]`` and ``[layer, d]`` float32 from a translators' state dict (keys ``{i}.weight`` and
    ``{i}.bias``, as the tuned-lens package saves them, or with the ``layer_translators.`` of a whole lens)."""
    if not isinstance(state, Mapping):
        raise OptLensError(f"The file {PARAMS_FILE} of {what} holds no translators.")
    tensors = {str(key).removeprefix(_PREFIX): value for key, value in state.items()}
    wanted = {f"{i}.{part}": shape for i in range(n_layers)
              for part, shape in (("weight", (d_model, d_model)), ("bias", (d_model,)))
              if part == "weight" or has_bias}
    if set(tensors) != set(wanted):
        missing = [key for key in wanted if key not in tensors]  # in layer order
        problem = (f"it lacks {missing[0]}" if missing
                   else f"it also holds {printable(sorted(set(tensors) - set(wanted))[0], 30)}")
        raise OptLensError(f"{_capital(what)} does not fit {n_layers} layers: {problem}, so it was made for another model.")
    for key, shape in wanted.items():
        value = tensors[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or tuple(value.shape) != shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise OptLensError(f"{_capital(what)} holds {key} as {printable(found, 30)}, not {shape}: it was made for another model.")
        if not torch.isfinite(value).all():
            raise OptLensError(f"{_capital(what)} holds values that are not numbers in {key}; it was not used.")
    weight = torch.stack([tensors[f"{i}.weight"].float() for i in range(n_layers)])  # [layer, d_model, d_model]
    bias = torch.stack([tensors[f"{i}.bias"].float() if has_bias else torch.zeros(d_model)
                        for i in range(n_layers)])  # [layer, d_model]
    return weight, bias


def save_tuned_lens(lens: TunedLens, folder: str | Path) -> Path:
    """Write ``lens`` in the published format (what the tuned-lens package's ``TunedLens.save`` writes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for i in range(lens.n_layers):  # each its own tensor: a view would save the whole stacked storage per key
        state[f"{i}.weight"], state[f"{i}.bias"] = lens.weight[i].clone(), lens.bias[i].clone()
    torch.save(state, folder / PARAMS_FILE)
    config = {"base_model_name_or_path": lens.base_model, "d_model": lens.d_model,
              "num_hidden_layers": lens.n_layers, "bias": True, "base_model_revision": None,
              "unembed_hash": None, "lens_type": LENS_TYPE}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


# --- Training -------------------------------------------------------------------------------------------


def train_tuned_lens(lm, texts: list[str], *, steps: int, batch: int = 256, learning_rate: float = 1e-3,
                     seed: int = 0, progress: TrainProgress | None = None) -> TunedLens:
    """A tuned lens for ``lm`` trained on ``texts`` the paper's way: translators start at the identity
    (A = 0, b = 0) and learn, with Adam on random batches of positions, to minimise each layer's
    KL(final ‖ lens) summed over layers. Deterministic for a given ``seed`` and thread count."""
    if steps < 1 or not texts:
        raise OptLensError("Training a tuned lens needs at least one step and one text.")
    resid = torch.cat([capture(lm, text).resid for text in texts], dim=1)  # [layer + 1, position, d_model]
    n_layers, d_model = lm.arch.n_layers, lm.arch.d_model
    weight = torch.zeros(n_layers, d_model, d_model, requires_grad=True)  # [layer, d_model, d_model]
    bias = torch.zeros(n_layers, d_model, requires_grad=True)  # [layer, d_model]
    optimizer = torch.optim.Adam([weight, bias], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        rows = resid[:, torch.randint(resid.shape[1], (batch,), generator=generator)]  # [layer + 1, batch, d_model]
        h = rows[:-1]  # [layer, batch, d_model]
        moved = h + torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))  # [layer, batch, d_model]
        with torch.no_grad():
            target = torch.log_softmax(readout_with_gradients(lm, rows[-1]), dim=-1)  # [batch, vocab]
        log_q = torch.log_softmax(readout_with_gradients(lm, moved), dim=-1)  # [layer, batch, vocab]
        loss = (target.exp() * (target - log_q)).sum(dim=-1).mean(dim=-1).sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([weight, bias], 1.0)
        optimizer.step()
        if not math.isfinite(loss.item()):
            raise OptLensError("Training the tuned lens diverged; try a smaller learning rate.")
        if progress:
            progress(step + 1, steps, loss.item())
    return TunedLens(base_model=lm.name, weight=weight.detach().clone(), bias=bias.detach().clone(), source="trained")
