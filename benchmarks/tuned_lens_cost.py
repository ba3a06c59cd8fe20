"""What the tuned lens costs and what it buys: training time of each demo lens, each layer's KL to the final
distribution through both lenses on held-out stories, and ``tuned_lens_map`` against ``logit_lens`` (and the
page's 16-position lens map with and without the lens) on a GPT-2-size capture.

- Training: ``train_tuned_lens`` with the shipping script's recipe (500 steps of 256 positions from 400
  stories), one thread. Target: under a minute per demo lens on two cores.
- KL: mean KL(final ‖ layer) in nats over every position of 100 held-out stories, the shipped lenses.
- Read-out cost: a random-weight GPT-2-size model (124M, 12 layers x 768) and a random 12-layer lens, 128
  random tokens; medians of interleaved repeats. The translators add 12 small matrix products to 13 read-outs
  through a 50,257-word unembedding, so the two should cost about the same.

    python benchmarks/tuned_lens_cost.py [--repeats 7] [--steps 500] [--threads 1]

Measured with ``--threads 1`` on two cores shared with five other jobs (load average 11-13), so the absolute
times are slow; the ratios are the figures to read:

    training, 500 steps           demo/tiny-gpt2 42.9 s, demo/tiny-opt 29.4 s (13 s and 20 s at a lighter load)
    KL, logit lens / tuned lens   tiny-gpt2: layer 0 21.88 / 0.95, layer 1 0.468 / 0.105, layer 2 0 / 0
                                  tiny-opt:  layer 0 22.82 / 0.96, layer 1 0.473 / 0.099, layer 2 0 / 0
    GPT-2 size, 128 tokens        logit_lens 186 ms, tuned_lens_map 192 ms (1.03x);
                                  16-position lens map 1360 ms, through the lens 1319 ms (0.97x)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import opt_lens  # noqa: E402
from capture_cost import MODELS, loaded, random_ids  # noqa: E402  (the same GPT-2-size model)
from demo_corpus import corpus  # noqa: E402
from train_tuned_lenses import HELD_OUT_SEED, HELD_OUT_STORIES, LENS_SEED, STEPS, STORIES, held_out_kl  # noqa: E402


def training_and_kl(steps: int) -> None:
    for name in opt_lens.DEMO_MODELS:
        lm = opt_lens.load(name)
        start = time.perf_counter()
        opt_lens.train_tuned_lens(lm, corpus(STORIES, seed=LENS_SEED), steps=steps, seed=LENS_SEED)
        print(f"train {name}: {time.perf_counter() - start:.1f} s for {steps} steps")
        logit, tuned = held_out_kl(lm, opt_lens.tuned_lens(lm), corpus(HELD_OUT_STORIES, seed=HELD_OUT_SEED))
        for layer, (a, b) in enumerate(zip(logit, tuned)):
            print(f"  KL layer {layer}: logit lens {a:.3f} nats, tuned lens {b:.3f} nats")


def random_lens(lm) -> opt_lens.TunedLens:
    generator = torch.Generator().manual_seed(0)
    n, d = lm.arch.n_layers, lm.arch.d_model
    return opt_lens.TunedLens(base_model=lm.name, weight=torch.randn(n, d, d, generator=generator) * 0.02,
                              bias=torch.zeros(n, d), source="trained")


def read_out_costs(repeats: int) -> None:
    label = "gpt2 (124M)"
    config, make_tokenizer, _ = MODELS[label]
    lm = loaded(label, config, make_tokenizer)
    cap = opt_lens.capture_ids(lm, random_ids(lm, 128))
    lens = random_lens(lm)
    positions = list(range(112, 128))  # the Predictions page's window of 16 positions
    calls = {
        "logit_lens": lambda: opt_lens.logit_lens(lm, cap, -1),
        "tuned_lens_map": lambda: opt_lens.tuned_lens_map(lm, cap, lens, -1),
        "logit_lens_map, 16 positions": lambda: opt_lens.logit_lens_map(lm, cap, positions),
        "logit_lens_map through the lens, 16 positions": lambda: opt_lens.logit_lens_map(lm, cap, positions, lens=lens),
    }
    times = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):  # interleaved: a busy moment slows every variant alike
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"{label}, 128 tokens, {name}: {seconds * 1e3:.1f} ms median")
    print(f"tuned_lens_map / logit_lens: {medians['tuned_lens_map'] / medians['logit_lens']:.2f}x; lens map through the "
          f"lens / without: {medians['logit_lens_map through the lens, 16 positions'] / medians['logit_lens_map, 16 positions']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    training_and_kl(args.steps)
    read_out_costs(args.repeats)


if __name__ == "__main__":
    main()
