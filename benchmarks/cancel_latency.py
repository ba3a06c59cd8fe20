"""How soon a heavy job notices that its student left: the longest gap between two progress calls.

A job is stopped at its progress call (Streamlit raises there once the student has left or changed the
prompt), so the longest gap between calls is the longest a departed student's job keeps the CPU. Issue 16
asks for under a second. Random-weight GPT-2-size (124M) model, CPU, float32, one torch thread, the
attention a loaded model uses; for each sweep and each batch size (rows of tokens per batched rerun) it
prints the total time and the longest gap.

    python benchmarks/cancel_latency.py [--tokens 256 1024] [--rows 512 1024 2048]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import opt_lens  # noqa: E402
from capture_cost import MODELS, loaded, random_ids  # noqa: E402
from opt_lens import sweeps  # noqa: E402


def timed(run) -> tuple[float, float]:
    """(total seconds, longest gap between progress calls, counting from the start and to the end)."""
    marks = [time.perf_counter()]
    run(lambda done, total: marks.append(time.perf_counter()))
    marks.append(time.perf_counter())
    return marks[-1] - marks[0], max(b - a for a, b in zip(marks, marks[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 1024, 2048])
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, make_tokenizer, _ = MODELS["gpt2 (124M)"]
    lm = loaded("gpt2 (124M)", config, make_tokenizer)
    print(f"{'job':<14} {'tokens':>6} {'rows':>5} {'total s':>8} {'longest gap s':>14}")
    for tokens in args.tokens:
        ids = random_ids(lm, tokens)
        cap = opt_lens.capturing.capture_ids(lm, ids)
        corrupted = opt_lens.capturing.capture_ids(lm, ids.flip(0))
        answer, wrong = 11, 12
        for rows in args.rows:
            sweeps.ROWS_PER_BATCH = rows
            jobs = {
                "head_effects": lambda p: opt_lens.head_effects(lm, cap, progress=p),
                "patch_heads": lambda p: opt_lens.patch_heads(lm, cap, corrupted, answer_id=answer, wrong_id=wrong,
                                                              progress=p),
            }
            for job, run in jobs.items():
                total, gap = timed(run)
                print(f"{job:<14} {tokens:>6} {rows:>5} {total:>8.1f} {gap:>14.2f}", flush=True)
        # Random ids decode to text that tokenizes longer: half of them leaves room for the new tokens.
        text = lm.tokenizer.decode(ids[: tokens // 2])
        total, gap = timed(lambda p: opt_lens.generate(lm, text, max_new_tokens=20, progress=p))
        print(f"{'generate 20':<14} {tokens // 2:>6} {'':>5} {total:>8.1f} {gap:>14.2f}   (the first gap reads the "
              "prompt)")


if __name__ == "__main__":
    main()
