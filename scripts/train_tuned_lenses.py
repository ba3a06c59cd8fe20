"""Train the demo models' tuned lenses from the demo corpus, bit for bit reproducibly, and save them beside the models.

Each lens goes to opt_lens/demo_models/<name>/tuned_lens/ in the tuned-lens project's published format
(config.json, params.pt), where ``opt_lens.tuned_lens`` finds it. One thread, fixed seeds and stories of
their own (not the models' training seed), so two runs write the same bytes. The figures printed at the end,
KL(final ‖ layer) on held-out stories for both lenses, are the ones the README quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opt_lens  # noqa: E402
from demo_corpus import corpus  # noqa: E402
from opt_lens.tuned import DEMO_LENS_FOLDER  # noqa: E402

LENS_SEED = 2023  # the stories the lenses train on; the models trained on seed 1234's
HELD_OUT_SEED = 99  # the stories the figures are measured on
STORIES, HELD_OUT_STORIES = 400, 100
STEPS = 500


def held_out_kl(lm, lens, texts: list[str]) -> tuple[list[float], list[float]]:
    """Mean KL(final ‖ layer) per layer over every position of ``texts``: the logit lens's, the tuned lens's."""
    logit, tuned = [], []
    for text in texts:
        resid = opt_lens.capture(lm, text).resid  # [layer + 1, seq, d_model]
        moved = torch.stack([lens.translate(layer, rows) for layer, rows in enumerate(resid)])  # [layer + 1, seq, d_model]
        logit.append(opt_lens.kl_to_final(opt_lens.readout(lm, resid)))  # [layer + 1, seq]
        tuned.append(opt_lens.kl_to_final(opt_lens.readout(lm, moved)))
    return (torch.cat(logit, dim=1).mean(dim=1).tolist(), torch.cat(tuned, dim=1).mean(dim=1).tolist())


def train_one(name: str, steps: int, out: Path | None) -> dict:
    folder = (out / name.removeprefix("demo/") if out else opt_lens.DEMO_MODELS[name]) / DEMO_LENS_FOLDER
    return {"model": name, **train_lens_beside(opt_lens.load(name), folder, steps)}


def train_lens_beside(lm, folder: Path, steps: int) -> dict:
    """Train ``lm``'s lens, save it to ``folder`` with its recipe, and measure both lenses on held-out stories
    (also run by scripts/train_demo_models.py, since a retrained model makes its old lens wrong)."""
    started = time.perf_counter()
    lens = opt_lens.train_tuned_lens(lm, corpus(STORIES, seed=LENS_SEED), steps=steps, seed=LENS_SEED)
    seconds = time.perf_counter() - started
    opt_lens.save_tuned_lens(lens, folder)
    recipe = {"steps": steps, "batch": 256, "learning_rate": 1e-3, "stories": STORIES, "seed": LENS_SEED, "threads": 1}
    (folder / "training.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    logit, tuned = held_out_kl(lm, lens, corpus(HELD_OUT_STORIES, seed=HELD_OUT_SEED))
    return {"seconds": round(seconds, 1), "folder": str(folder), "params_bytes": (folder / "params.pt").stat().st_size,
            "kl_logit_lens": [round(x, 4) for x in logit], "kl_tuned_lens": [round(x, 4) for x in tuned]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=None, help="write <out>/<name>/tuned_lens/ instead of shipping")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same sums in the same order on every machine with this torch
    for name in opt_lens.DEMO_MODELS:
        print(json.dumps(train_one(name, args.steps, args.out)), flush=True)


if __name__ == "__main__":
    main()
