"""Measure what the demo models show: previous-token head, induction head, in-context copying.

    python scripts/measure_demo_models.py [--folder DIR ...] [--write-cards]

Prints, for each model, the best previous-token head on ordinary grammar text, the best induction head on
random tokens repeated once (averaged over random lengths, random prefixes and seeds), and the copying loss
drop. With --write-cards it also writes each folder's README.md from these figures and its training.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import opt_lens  # noqa: E402
from demo_corpus import story  # noqa: E402
from opt_lens import heads  # noqa: E402

N_PROBES = 16


@dataclass(frozen=True)
class Figures:
    previous_token_head: tuple[int, int]  # (layer, head)
    previous_token_score: float
    induction_head: tuple[int, int]
    induction_score: float
    copying_loss_drop: float  # nats, mean over the probes
    first_copy_loss: float  # nats, mean over the probes
    previous_token_map: torch.Tensor  # [layer, head]
    induction_map: torch.Tensor  # [layer, head]

    def summary(self) -> str:
        (pl, ph), (il, ih) = self.previous_token_head, self.induction_head
        return (f"previous-token head L{pl}.H{ph} {self.previous_token_score:.2f} (target >= 0.5), "
                f"induction head L{il}.H{ih} {self.induction_score:.2f} (target >= 0.3), "
                f"copying loss drop {self.copying_loss_drop:.2f} nats from {self.first_copy_loss:.2f} (target >= 2)")


def best_head(scores: torch.Tensor) -> tuple[int, int]:
    """(layer, head) of the highest score in a ``[layer, head]`` map."""
    return divmod(int(scores.argmax()), scores.shape[1])


def grammar_text(lm, rng: random.Random) -> str:
    """Whole stories from the training grammar, as many as fit the model's context."""
    text = story(rng)
    while len(lm.tokenizer(longer := f"{text} {story(rng)}", verbose=False)["input_ids"]) <= lm.arch.max_positions:
        text = longer
    return text


def measure(lm) -> Figures:
    rng = random.Random(7)
    previous = torch.stack([
        heads.previous_token_scores(opt_lens.capture(lm, grammar_text(lm, rng)).patterns) for _ in range(N_PROBES)
    ]).mean(0)  # [layer, head]
    induction, drops, first_losses = [], [], []
    for seed in range(N_PROBES):
        sizes = random.Random(seed)
        length, noise = sizes.randrange(10, 41), sizes.randrange(0, 21)
        probe, start, period = heads.induction_probe(lm, length=length, seed=seed, noise=noise)
        induction.append(heads.induction_scores(probe.patterns, start, period))
        losses = heads.copy_losses(probe.logits, probe.input_ids, start, period)
        drops.append(losses.drop)
        first_losses.append(losses.first)
    induction = torch.stack(induction).mean(0)  # [layer, head]
    return Figures(
        previous_token_head=best_head(previous),
        previous_token_score=float(previous.max()),
        induction_head=best_head(induction),
        induction_score=float(induction.max()),
        copying_loss_drop=sum(drops) / len(drops),
        first_copy_loss=sum(first_losses) / len(first_losses),
        previous_token_map=previous,
        induction_map=induction,
    )


CARD = """# {name}: a toy {family}, not {family}

A {layers}-layer, {heads}-head, {width}-wide `{cls}` ({params:,} parameters) trained from scratch on a CPU by
`scripts/train_demo_models.py`. It is a toy: it exists so that opt_lens and its app run offline on a model
with real, learned mechanisms. It knows nothing beyond its tiny grammar, and nothing about the real {family}
can be read from it.

## Training
- Text: {stories:,} short generated stories from `scripts/demo_corpus.py` (people, animals, places, numbers,
  stories that mention names again and repeat earlier sentences), about {tokens:,} tokens.
- Copying: in {share:.0%} of the {context}-token training rows a span of 2 to 47 tokens, mostly random
  tokens, comes back again and again after short random gaps, at a random offset, so that only looking
  back predicts it.
- Tokenizer: byte-level BPE ({vocab} tokens with the special ones, `Ġ` marks a space) trained on the same
  text{bos}.
- {steps} steps of batch {batch}, AdamW at learning rate {lr} with linear warmup and cosine decay, gradient
  clipping at 1; learned positions started from sinusoids{sinusoid}; seed {seed}; {seconds} s on one CPU core.

## What its heads do (measured by `scripts/measure_demo_models.py`)
- Previous-token head **L{prev[0]}.H{prev[1]}**: mean attention to the previous token {prev_score:.2f} on
  ordinary grammar text.
- Induction head **L{ind[0]}.H{ind[1]}**: on random tokens repeated once (random length 10-40 after 0-20 random
  tokens{after_bos}), mean attention from each token of the second copy to the token right after its
  earlier occurrence {ind_score:.2f}.
- In-context copying: on those sequences the loss on the second copy is {drop:.2f} nats below the loss on the
  first copy ({first:.2f} nats, where nothing predicts the random tokens).

Layers and heads count from 0. Previous-token score of every head (rows are layers, columns heads):

{prev_map}

Induction score of every head:

{ind_map}
"""


def markdown_map(scores: torch.Tensor) -> str:
    """A [layer, head] score map as a Markdown table."""
    header = "| layer | " + " | ".join(f"H{h}" for h in range(scores.shape[1])) + " |"
    rule = "|---" * (scores.shape[1] + 1) + "|"
    rows = [f"| L{layer} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for layer, row in enumerate(scores.tolist())]
    return "\n".join([header, rule, *rows])


def write_card(folder: Path, lm, figures: Figures) -> None:
    training = json.loads((folder / "training.json").read_text())
    family = {"opt": "OPT", "gpt2": "GPT-2"}[lm.model.config.model_type]
    arch = lm.arch
    (folder / "README.md").write_text(CARD.format(
        name=folder.name, family=family, layers=arch.n_layers, heads=arch.n_heads, width=arch.d_model,
        cls=type(lm.model).__name__, params=arch.n_params, stories=training["stories"], tokens=training["tokens"],
        share=training["repeat_share"], context=training["context"], vocab=arch.vocab_size,
        bos=", and like OPT's it starts every text with `</s>`" if family == "OPT" else "",
        after_bos=" after the leading `</s>`" if family == "OPT" else "",
        steps=training["steps"], batch=training["batch"], lr=training["lr"], seed=training["seed"],
        sinusoid="" if training["sinusoid_init"] else " (not here: random)", seconds=training["seconds"],
        prev=figures.previous_token_head, prev_score=figures.previous_token_score,
        ind=figures.induction_head, ind_score=figures.induction_score, drop=figures.copying_loss_drop,
        first=figures.first_copy_loss,
        prev_map=markdown_map(figures.previous_token_map), ind_map=markdown_map(figures.induction_map),
    ))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", nargs="*", type=Path, default=list(opt_lens.DEMO_MODELS.values()))
    parser.add_argument("--write-cards", action="store_true")
    args = parser.parse_args()
    for folder in args.folder:
        started = time.perf_counter()
        lm = opt_lens.load(str(folder))
        seconds = time.perf_counter() - started
        figures = measure(lm)
        size = sum(path.stat().st_size for path in folder.iterdir())
        print(f"\n{folder}: {size / 2**20:.1f} MiB, loads in {seconds:.2f} s")
        print(f"  {figures.summary()}")
        print(f"  previous-token map:\n{figures.previous_token_map.numpy().round(2)}")
        print(f"  induction map:\n{figures.induction_map.numpy().round(2)}")
        if args.write_cards:
            write_card(folder, lm, figures)


if __name__ == "__main__":
    main()
