import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402

import opt_lens  # noqa: E402


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A factory of saved tiny random-weight model folders, built once per session."""
    folders = {}

    def get(kind: str) -> Path:
        if kind not in folders:
            folders[kind] = tiny_models.save(kind, tmp_path_factory.mktemp(kind.replace("-", "_")))
        return folders[kind]

    return get


@pytest.fixture(scope="session")
def tiny_lm(tiny_folder):
    """A factory of loaded tiny models (``opt_lens.LoadedModel``), one per kind per session."""
    loaded = {}

    def get(kind: str) -> opt_lens.LoadedModel:
        if kind not in loaded:
            loaded[kind] = opt_lens.load(str(tiny_folder(kind)))
        return loaded[kind]

    return get
