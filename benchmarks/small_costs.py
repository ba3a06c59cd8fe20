"""Two costs the tests used to time, printed here instead: loading a bundled demo model, and matching every
head of one GPT-2-size model against every head of another.

- Demo load: ``opt_lens.load`` of each demo model (2.7 MB of weights from the repository), after one
  warm-up load has paid for importing transformers' model code, which any model pays once per process.
  Target: well under 2 s, so a class on the demo models never waits for them.
- ``match_heads`` on 12 x 12 heads over 256 shared tokens (hand-made causal patterns): one batched
  similarity; a loop over the 20,736 head pairs would take minutes. Target: under 1 s.

    python benchmarks/small_costs.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opt_lens  # noqa: E402
from opt_lens import compare  # noqa: E402
from opt_lens.attention import StoredPatterns  # noqa: E402
from opt_lens.names import DEMO_MODELS  # noqa: E402


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def patterns(attention: torch.Tensor) -> SimpleNamespace:
    """What match_heads reads of a capture: its patterns ``[layer, head, query, key]``."""
    seq = attention.shape[-1]
    return SimpleNamespace(patterns=StoredPatterns(attention), seq_len=seq, attention_tokens=seq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    opt_lens.load(next(iter(DEMO_MODELS)))  # warm-up: imports transformers' model code
    for name in DEMO_MODELS:
        print(f"load {name}: {median_seconds(lambda n=name: opt_lens.load(n), args.repeats) * 1e3:.0f} ms median")

    seq = 256
    scores = torch.randn(12, 12, seq, seq, generator=torch.Generator().manual_seed(0))  # [layer, head, query, key]
    attention = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), -math.inf).softmax(-1)
    a, b = patterns(attention), patterns(attention.flip(0, 1))
    alignment = SimpleNamespace(pairs=[(i, i) for i in range(seq)])
    took = median_seconds(lambda: compare.match_heads(a, b, alignment), args.repeats)
    print(f"match_heads, 144 x 144 heads over {seq} tokens: {took * 1e3:.0f} ms median")


if __name__ == "__main__":
    main()
