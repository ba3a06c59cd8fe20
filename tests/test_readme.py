"""The README's counts against the code they describe (issue 20.9: it said four guided experiments when the
start page had six)."""

import json
import re
import tomllib
from pathlib import Path

import pytest

import opt_lens
from app import experiments, navigation

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
NUMBER_WORDS = {word: n for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}


def test_every_count_of_the_guided_experiments_is_the_start_pages():
    counts = re.findall(r"\b(\w+) guided experiments", README)
    assert counts, "the README no longer counts the guided experiments"
    assert [NUMBER_WORDS.get(word, word) for word in counts] == [len(experiments.EXPERIMENTS)] * len(counts)


def test_the_page_table_lists_the_apps_pages_in_the_sidebars_order():
    table = README.split("### What the app shows", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == [title for _, title, _, _ in navigation.PAGES]


def test_the_python_version_is_the_projects():
    required = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    version = re.fullmatch(r">=(\d+\.\d+)", required)[1]
    assert f"Python {version} or newer" in README


@pytest.mark.parametrize("name", ["demo/tiny-gpt2", "demo/tiny-opt"])
def test_the_demo_vocabulary_figures_are_the_models(name):
    folder = ROOT / "opt_lens" / "demo_models" / name.split("/")[1]
    vocab_size = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    tokenizer = opt_lens.load_tokenizer(name).tokenizer
    learned = len(tokenizer) - len(tokenizer.added_tokens_decoder)  # pieces the BPE learned, specials aside
    assert len(tokenizer) == vocab_size
    assert f"{vocab_size:,} for `{name}`" in README
    assert f"with {learned:,} learned BPE pieces" in README
    notice = next(e for e in experiments.EXPERIMENTS if e.page == "pages/tokens.py").demo_notice
    assert f"only {learned:,} pieces learned" in notice and f"{vocab_size:,}" in notice
