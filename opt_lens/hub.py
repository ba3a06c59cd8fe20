"""Fetch a model from the Hugging Face Hub in two steps: its config first, its weights only once they fit.

Every Hub failure becomes an ``OptLensError`` a student can read, and the cause goes to the log with its
traceback. Every request has a timeout (``HF_HUB_ETAG_TIMEOUT``, 10 s unless set, for the listing and
each file's metadata), so a Hub that never answers costs a student seconds, not minutes. A model downloaded before loads from the local cache, found
with huggingface_hub's own cache scan, when the Hub cannot be reached.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CachedRepoInfo, CachedRevisionInfo, HfApi, constants, hf_hub_download, scan_cache_dir
from huggingface_hub.errors import (
    CacheNotFound,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# huggingface_hub's public alias of the HTTP library it ships with, kept stable across its major versions.
from huggingface_hub.utils import httpx
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
# The files from which transformers can build a fast tokenizer: any one of these sets is enough.
TOKENIZER_SETS = ({"tokenizer.json"}, {"vocab.json", "merges.txt"}, {"tokenizer.model"})
# The connection failed (refused, timed out, no route, offline mode): not an answer from the Hub. An HTTP
# error status is an answer, and an OSError from the disk is the disk's, so neither is counted here.
_NETWORK_ERRORS = (httpx.TransportError, ConnectionError, TimeoutError)
MAX_CONFIG_BYTES = 1_000_000  # real configs are a few kB; a larger one is refused unread


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    revision: str | None
    folder: Path  # where the Hub cache keeps this revision's files
    file_sizes: dict[str, int]  # empty when working from the cache without the Hub


def hub_timeout() -> float:
    """Seconds to wait for the Hub to answer a request: huggingface_hub's own ``HF_HUB_ETAG_TIMEOUT``."""
    return float(constants.HF_HUB_ETAG_TIMEOUT)


def fetch_config(repo_id: str) -> Snapshot:
    try:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=hub_timeout())
    except _NETWORK_ERRORS as error:
        logger.info("Hub unreachable for %s (%r); trying the local cache", repo_id, error)
        return _cached_snapshot(repo_id, error)
    except HfHubHTTPError as error:
        raise _refusal(repo_id, error) from error
    file_sizes = {s.rfilename: s.size or 0 for s in info.siblings or ()}
    if "config.json" not in file_sizes:
        raise OptLensError(f"{repo_id} has no config.json, so it is not a transformers model.")
    if file_sizes["config.json"] > MAX_CONFIG_BYTES:
        raise OptLensError(f"The config of {repo_id} is larger than any real model's; it was not downloaded.")
    config_path = _download(repo_id, "config.json", info.sha)
    return Snapshot(repo_id=repo_id, revision=info.sha, folder=Path(config_path).parent, file_sizes=file_sizes)


def _refusal(repo_id: str, error: Exception, file_name: str | None = None) -> OptLensError:
    """The message for a failed Hub request or download, with the cause logged; the caller raises it."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, GatedRepoError):
        message = f"{repo_id} is gated: accept its terms on the Hub and set HF_TOKEN."
    elif isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError)):
        message = f"There is no model called {repo_id} on the Hugging Face Hub (or it is private)."
    elif status == 401:
        message = "The Hugging Face Hub rejected the token in HF_TOKEN: check it, or unset it to use public models."
    elif status == 429:
        message = "The Hugging Face Hub is limiting how often this server may ask: try again in a minute."
    elif isinstance(error, HfHubHTTPError):
        message = f"The Hugging Face Hub refused the request for {repo_id} (HTTP {status}); try again later."
    elif isinstance(error, (*_NETWORK_ERRORS, LocalEntryNotFoundError)):
        message = (
            f"Cannot reach the Hugging Face Hub to download {repo_id}; check the connection. "
            "The demo models work offline."
        )
    elif isinstance(error, OSError) and error.errno == errno.ENOSPC:
        message = f"The disk is full, so {repo_id} could not be saved: free space in the model cache and try again."
    elif isinstance(error, OSError):
        message = f"{repo_id} could not be saved to the model cache ({error.strerror or type(error).__name__})."
    else:
        message = f"Downloading {file_name or 'the files'} of {repo_id} failed; try again."
    logger.warning("%s", message, exc_info=error)
    return OptLensError(message)


def _cached_snapshot(repo_id: str, network_error: Exception) -> Snapshot:
    revisions = [revision for repo in _cached_repos() if repo.repo_id == repo_id for revision in repo.revisions]
    with_config = [r for r in revisions if "config.json" in _files(r)]
    revision = _preferred([r for r in with_config if _loadable_files(_files(r))]) or _preferred(with_config)
    if revision is None:
        raise _refusal(repo_id, network_error) from network_error
    return Snapshot(repo_id=repo_id, revision=revision.commit_hash, folder=revision.snapshot_path, file_sizes={})


def weight_files(file_sizes: dict[str, int]) -> list[str]:
    """Safetensors when the repository has them; otherwise the PyTorch ``.bin`` files (loaded weights-only)."""
    root_files = [f for f in file_sizes if "/" not in f]
    for suffix, index in ((".safetensors", "model.safetensors.index.json"), (".bin", "pytorch_model.bin.index.json")):
        found = sorted(f for f in root_files if f.endswith(suffix) and f.startswith(("model", "pytorch_model")))
        if found:
            return found + ([index] if index in file_sizes else [])
    return []


def has_tokenizer(file_names) -> bool:
    names = set(file_names)
    return any(wanted <= names for wanted in TOKENIZER_SETS)


def fetch_tokenizer(snapshot: Snapshot) -> None:
    """Download a snapshot's tokenizer files only (a few MB, no weights)."""
    if not snapshot.file_sizes:  # offline: the cache must already hold them
        if not has_tokenizer(path.name for path in snapshot.folder.iterdir()):
            raise OptLensError(
                f"The tokenizer of {snapshot.repo_id} was not downloaded before, and the Hugging Face Hub cannot be reached now."
            )
        return
    _require_listed_tokenizer(snapshot)
    for file_name in TOKENIZER_FILES:
        if file_name in snapshot.file_sizes:
            _download(snapshot.repo_id, file_name, snapshot.revision)


def fetch_files(snapshot: Snapshot, progress: ProgressCallback | None = None) -> None:
    """Download the weights and tokenizer files of a snapshot, reporting bytes to ``progress``."""
    if not snapshot.file_sizes:  # offline: the cache must already hold everything
        if not _loadable_files({path.name for path in snapshot.folder.iterdir()}):
            raise OptLensError(
                f"Only part of {snapshot.repo_id} was downloaded before, and the Hugging Face Hub cannot be reached now."
            )
        return
    weights = weight_files(snapshot.file_sizes)
    if not weights:
        raise OptLensError(f"{snapshot.repo_id} has no PyTorch weights (safetensors or .bin).")
    _require_listed_tokenizer(snapshot)
    wanted = [f for f in TOKENIZER_FILES if f in snapshot.file_sizes] + weights
    total = sum(snapshot.file_sizes[f] for f in wanted)
    done = 0
    for file_name in wanted:
        _download(snapshot.repo_id, file_name, snapshot.revision, _progress_bar(progress, done, total, file_name))
        done += snapshot.file_sizes[file_name]
        if progress:
            progress(done, total, file_name)


def _require_listed_tokenizer(snapshot: Snapshot) -> None:
    if not has_tokenizer(snapshot.file_sizes):
        raise OptLensError(f"{snapshot.repo_id} has no tokenizer files, so its text cannot be split into tokens.")


def _download(repo_id: str, file_name: str, revision: str | None, tqdm_class=None) -> str:
    try:
        return hf_hub_download(repo_id, file_name, revision=revision, tqdm_class=tqdm_class, etag_timeout=hub_timeout())
    except (HfHubHTTPError, *_NETWORK_ERRORS, OSError, ValueError) as error:
        raise _refusal(repo_id, error, file_name) from error


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
    """Whether the Hugging Face Hub answers at all, within ``timeout`` seconds."""
    try:
        HfApi().model_info("gpt2", timeout=timeout)
    except (HfHubHTTPError, *_NETWORK_ERRORS) as error:
        logger.info("Hugging Face Hub unreachable: %r", error)
        return False
    return True


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    revision: str  # the commit the cache holds
    folder: Path  # that commit's snapshot folder, ready for from_pretrained
    size_bytes: int  # on disk


def cached_models() -> list[CachedModel]:
    """The Hub models in the local Hugging Face cache that can load without the Hub, sorted by ID.

    Found with huggingface_hub's ``scan_cache_dir``. Offered only when a snapshot holds a config, weights and
    tokenizer files, and the config is a decoder-only model this version of transformers knows, of a
    plausible size (no custom code runs). Of several complete snapshots, the one ``main`` points at, else
    the newest.
    """
    from .loading import check_config_file  # loading imports this module

    found = []
    for repo in sorted(_cached_repos(), key=lambda repo: repo.repo_id):
        revision = _preferred([r for r in repo.revisions if _loadable_files(_files(r))])
        if revision is None:
            continue
        try:
            check_config_file(repo.repo_id, revision.snapshot_path / "config.json")
        except OptLensError as refused:
            logger.info("Not offering the cached %s: %s", repo.repo_id, refused)
            continue
        found.append(CachedModel(repo.repo_id, revision.commit_hash, revision.snapshot_path, revision.size_on_disk))
    return found


def _cached_repos() -> list[CachedRepoInfo]:
    try:
        cache = scan_cache_dir(constants.HF_HUB_CACHE)  # read now: the setting may change after import
    except CacheNotFound:
        return []
    except OSError as error:
        logger.warning("Could not read the Hugging Face cache at %s", constants.HF_HUB_CACHE, exc_info=error)
        return []
    return [repo for repo in cache.repos if repo.repo_type == "model"]


def _files(revision: CachedRevisionInfo) -> set[str]:
    return {f.file_path.relative_to(revision.snapshot_path).as_posix() for f in revision.files}


def _preferred(revisions: list[CachedRevisionInfo]) -> CachedRevisionInfo | None:
    """The revision ``main`` points at, else the newest."""
    return max(revisions, key=lambda r: ("main" in r.refs, r.last_modified), default=None)


def _loadable_files(file_names: set[str]) -> bool:
    return "config.json" in file_names and bool(weight_files(dict.fromkeys(file_names, 0))) and has_tokenizer(file_names)
