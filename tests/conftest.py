import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import hub_standin  # noqa: E402  (standard library only)

# huggingface_hub reads its endpoint, cache folder and offline flag once, when it is imported: set them before
# anything imports it, so that no test sees this machine's real Hub, cache, token or offline setting. Every
# test starts with an unreachable Hub and an empty cache; the fixtures below set another state for one test.
assert "huggingface_hub" not in sys.modules, "conftest.py must configure huggingface_hub before it is imported"
for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE",
                 "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
    os.environ.pop(variable, None)
_HF_HOME = tempfile.mkdtemp(prefix="opt_lens_tests_hf_home_")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_ENDPOINT"] = hub_standin.UNREACHABLE_ENDPOINT
# Else the first request of each process also asks the Hub for its list of AI agents (3 s more when it hangs).
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# A proxy set for this machine must not carry the stand-in's 127.0.0.1 requests elsewhere.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

import tiny_models  # noqa: E402
from huggingface_hub import constants as hub_constants  # noqa: E402

import opt_lens  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HF_HOME, ignore_errors=True)


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


def _use_hub(monkeypatch, tmp_path: Path, endpoint: str) -> Path:
    """Point huggingface_hub at ``endpoint`` with an empty cache of this test's own; return the cache folder."""
    cache = tmp_path / "hf-hub-cache"
    monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    return cache


@pytest.fixture
def hub_unreachable(monkeypatch, tmp_path):
    """No Hub: every connection is refused at once (the session's default, made explicit). Returns the cache folder."""
    return _use_hub(monkeypatch, tmp_path, hub_standin.UNREACHABLE_ENDPOINT)


@pytest.fixture
def hub_answering(monkeypatch, tmp_path, tiny_folder):
    """A Hub on 127.0.0.1 that serves ``someone/tiny-gpt2`` and ``someone/tiny-opt`` (tiny random-weight models)
    through the real huggingface_hub client, into an empty cache of this test's own (``hub.cache``).
    ``hub.add(repo_id, folder)`` serves another folder; ``hub.stop()`` makes the Hub unreachable mid-test."""
    hub = hub_standin.AnsweringHub()
    hub.add("someone/tiny-gpt2", tiny_folder("gpt2"))
    hub.add("someone/tiny-opt", tiny_folder("opt"))
    hub.cache = _use_hub(monkeypatch, tmp_path, hub.endpoint)
    yield hub
    hub.stop()


@pytest.fixture
def hub_hanging(monkeypatch, tmp_path):
    """A Hub on 127.0.0.1 that accepts every connection and never replies (a captive portal, a stalled proxy)."""
    hub = hub_standin.HangingHub()
    hub.cache = _use_hub(monkeypatch, tmp_path, hub.endpoint)
    yield hub
    hub.stop()
