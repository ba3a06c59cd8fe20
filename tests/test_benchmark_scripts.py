"""The benchmark scripts that nobody runs in the suite still start: their wiring, not their timings (those are
measured by hand on a quiet machine; a script that fails on its first line wastes that run)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_causal_cost_benches_both_model_sizes_at_both_lengths(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import causal_cost

    asked = []
    monkeypatch.setattr(causal_cost, "bench", lambda label, config, make_tokenizer, *rest: asked.append((label, *rest)))
    monkeypatch.setattr(sys, "argv", ["causal_cost.py", "--threads", "1"])
    threads = causal_cost.torch.get_num_threads()
    try:
        causal_cost.main()
    finally:
        causal_cost.torch.set_num_threads(threads)
    assert asked == [("gpt2 (124M)", [32, 128], 3, False), ("opt-125m", [32, 128], 3, False)]


def test_small_costs_prints_both_demo_loads_and_the_head_matching(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import small_costs

    monkeypatch.setattr(sys, "argv", ["small_costs.py", "--repeats", "1"])
    small_costs.main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "load demo/tiny-gpt2", "load demo/tiny-opt", "match_heads, 144 x 144 heads over 256 tokens"]


def test_inside_cost_times_every_view_at_both_lengths(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import inside_cost

    asked = []
    monkeypatch.setattr(inside_cost, "bench", lambda lengths, repeats: asked.append((lengths, repeats)))
    monkeypatch.setattr(sys, "argv", ["inside_cost.py"])
    inside_cost.main()
    assert asked == [([256, 1024], 3)]
