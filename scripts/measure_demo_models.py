"""Measure what the demo models show: previous-token head, induction head, in-context copying.

    python scripts/measure_demo_models.py [--folder DIR ...]

Prints, for each model, the best previous-token head on ordinary grammar text, the best induction head on
random tokens repeated once (averaged over several lengths and seeds), and the copying loss drop.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import opt_lens  # noqa: E402
from demo_corpus import story  # noqa: E402
from opt_lens import heads  # noqa: E402

N_PROBES = 8


def measure(lm) -> dict:
    rng = random.Random(7)
    previous = torch.stack([
        heads.previous_token_scores(opt_lens.capture(lm, " ".join(story(rng) for _ in range(3))).attention)
        for _ in range(N_PROBES)
    ]).mean(0)  # [layer, head]
    induction, drops = [], []
    for seed in range(N_PROBES):
        probe, start, period = heads.induction_probe(lm, length=random.Random(seed).randrange(15, 50), seed=seed)
        induction.append(heads.induction_scores(probe.attention, start, period))
        drops.append(heads.copying_loss_drop(probe.logits, probe.input_ids, start, period))
    induction = torch.stack(induction).mean(0)  # [layer, head]
    best_previous = divmod(int(previous.argmax()), previous.shape[1])
    best_induction = divmod(int(induction.argmax()), induction.shape[1])
    return {
        "previous_token_head": best_previous,
        "previous_token_score": float(previous.max()),
        "induction_head": best_induction,
        "induction_score": float(induction.max()),
        "copying_loss_drop": sum(drops) / len(drops),
        "previous_token_map": previous,
        "induction_map": induction,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", nargs="*", default=list(opt_lens.DEMO_MODELS))
    args = parser.parse_args()
    for name in args.folder:
        figures = measure(opt_lens.load(name))
        print(f"\n{name}")
        print(f"  previous-token head L{figures['previous_token_head'][0]}.H{figures['previous_token_head'][1]}:"
              f" {figures['previous_token_score']:.2f} (target >= 0.5)")
        print(f"  induction head      L{figures['induction_head'][0]}.H{figures['induction_head'][1]}:"
              f" {figures['induction_score']:.2f} (target >= 0.3)")
        print(f"  copying loss drop: {figures['copying_loss_drop']:.2f} nats (target >= 2)")
        print(f"  previous-token map:\n{figures['previous_token_map'].numpy().round(2)}")
        print(f"  induction map:\n{figures['induction_map'].numpy().round(2)}")


if __name__ == "__main__":
    main()
