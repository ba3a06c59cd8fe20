"""Fetch a model from the Hugging Face Hub in two steps: its config first, its weights only once they fit.

Every Hub failure becomes an ``OptLensError`` a student can read. A model downloaded before still loads
from the local cache when the Hub cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm.auto import tqdm

from .errors import OptLensError

logger = logging.getLogger(__name__)

# progress(done_bytes, total_bytes, file_name) while a model downloads.
ProgressCallback = Callable[[int, int, str], None]

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "generation_config.json",
)
_NETWORK_ERRORS = (httpx.TransportError, ConnectionError, TimeoutError, OSError)
MAX_CONFIG_BYTES = 1_000_000  # real configs are a few kB; a larger one is refused unread


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    revision: str | None
    folder: Path  # where the Hub cache keeps this revision's files
    file_sizes: dict[str, int]  # empty when working from the cache without the Hub


def fetch_config(repo_id: str) -> Snapshot:
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except GatedRepoError as error:
        raise OptLensError(f"{repo_id} is gated: accept its terms on the Hub and set HF_TOKEN.") from error
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise OptLensError(f"There is no model called {repo_id} on the Hugging Face Hub (or it is private).") from error
    except HfHubHTTPError as error:
        raise OptLensError(f"The Hugging Face Hub refused the request for {repo_id}; try again later.") from error
    except _NETWORK_ERRORS as error:
        logger.info("Hub unreachable for %s (%s); trying the local cache", repo_id, error)
        return _cached_snapshot(repo_id)
    file_sizes = {s.rfilename: s.size or 0 for s in info.siblings or ()}
    if "config.json" not in file_sizes:
        raise OptLensError(f"{repo_id} has no config.json, so it is not a transformers model.")
    config_path = _download(repo_id, "config.json", info.sha)
    return Snapshot(repo_id=repo_id, revision=info.sha, folder=Path(config_path).parent, file_sizes=file_sizes)


def _cached_snapshot(repo_id: str) -> Snapshot:
    try:
        config_path = hf_hub_download(repo_id, "config.json", local_files_only=True)
    except (LocalEntryNotFoundError, EntryNotFoundError, OSError) as error:
        raise OptLensError(
            f"Cannot reach the Hugging Face Hub to download {repo_id}. The demo models work offline."
        ) from error
    return Snapshot(repo_id=repo_id, revision=None, folder=Path(config_path).parent, file_sizes={})


def weight_files(file_sizes: dict[str, int]) -> list[str]:
    """Safetensors when the repository has them; otherwise the PyTorch ``.bin`` files (loaded weights-only)."""
    root_files = [f for f in file_sizes if "/" not in f]
    for suffix, index in ((".safetensors", "model.safetensors.index.json"), (".bin", "pytorch_model.bin.index.json")):
        found = sorted(f for f in root_files if f.endswith(suffix) and f.startswith(("model", "pytorch_model")))
        if found:
            return found + ([index] if index in file_sizes else [])
    return []


def fetch_files(snapshot: Snapshot, progress: ProgressCallback | None = None) -> None:
    """Download the weights and tokenizer files of a snapshot, reporting bytes to ``progress``."""
    if not snapshot.file_sizes:
        return  # offline: whatever the cache holds is what from_pretrained will find
    weights = weight_files(snapshot.file_sizes)
    if not weights:
        raise OptLensError(f"{snapshot.repo_id} has no PyTorch weights (safetensors or .bin).")
    wanted = [f for f in TOKENIZER_FILES if f in snapshot.file_sizes] + weights
    total = sum(snapshot.file_sizes[f] for f in wanted)
    done = 0
    for file_name in wanted:
        _download(snapshot.repo_id, file_name, snapshot.revision, _progress_bar(progress, done, total, file_name))
        done += snapshot.file_sizes[file_name]
        if progress:
            progress(done, total, file_name)


def _download(repo_id: str, file_name: str, revision: str | None, tqdm_class=None) -> str:
    try:
        return hf_hub_download(repo_id, file_name, revision=revision, tqdm_class=tqdm_class)
    except GatedRepoError as error:
        raise OptLensError(f"{repo_id} is gated: accept its terms on the Hub and set HF_TOKEN.") from error
    except (HfHubHTTPError, *_NETWORK_ERRORS) as error:
        raise OptLensError(f"Downloading {file_name} of {repo_id} failed; check the connection and try again.") from error


def _progress_bar(progress: ProgressCallback | None, done_before: int, total: int, file_name: str):
    """A tqdm class that forwards the Hub client's byte counts to ``progress``."""
    if progress is None:
        return None

    class Forward(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            super().update(n)
            progress(done_before + int(self.n), total, file_name)

    return Forward


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all (fails in milliseconds where there is no network)."""
    try:
        HfApi().model_info("gpt2", timeout=timeout)
    except (HfHubHTTPError, *_NETWORK_ERRORS) as error:
        logger.info("Hugging Face Hub unreachable: %s", error)
        return False
    return True
