"""The demo models' training script: deterministic, and it rebuilds what ships (tokenizers, configs)."""

import subprocess
import sys
from pathlib import Path

import pytest

import opt_lens

ROOT = Path(__file__).resolve().parents[1]
SAME_AS_SHIPPED = ("config.json", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module")
def two_short_runs(tmp_path_factory) -> list[Path]:
    """The script run twice from scratch for a few steps (the full run takes about 14 minutes)."""
    outs = []
    for attempt in range(2):
        out = tmp_path_factory.mktemp(f"run{attempt}")
        subprocess.run([sys.executable, "scripts/train_demo_models.py", "--steps", "3", "--lens-steps", "3", "--out", str(out)],
                       cwd=ROOT, check=True, capture_output=True, timeout=300)
        outs.append(out)
    return outs


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-opt"])
def test_two_runs_give_identical_models(two_short_runs, name):
    first, second = (out / name for out in two_short_runs)
    for file in ("model.safetensors", *SAME_AS_SHIPPED):
        assert (first / file).read_bytes() == (second / file).read_bytes(), f"{name}/{file} differs between runs"
    # A retrained model gets a lens trained on it, not the shipped one, which reads the shipped model.
    lens = "tuned_lens/params.pt"
    assert (first / lens).read_bytes() == (second / lens).read_bytes()
    assert (first / lens).read_bytes() != (opt_lens.DEMO_MODELS[f"demo/{name}"] / lens).read_bytes()


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-opt"])
def test_the_script_rebuilds_the_shipped_tokenizer_and_config(two_short_runs, name):
    built, shipped = two_short_runs[0] / name, opt_lens.DEMO_MODELS[f"demo/{name}"]
    for file in SAME_AS_SHIPPED:
        assert (built / file).read_text() == (shipped / file).read_text(), f"{file} differs from the shipped one"
    card = (built / "README.md").read_text()
    assert "3 steps of batch 16" in card and "toy" in card  # the card describes the run that made it
