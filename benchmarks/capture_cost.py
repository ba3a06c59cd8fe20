"""Capture cost against a plain transformers forward pass, and the memory a capture holds.

Random-weight GPT-2-size (124M) and OPT-125m-size models, CPU, float32. For each prompt length it prints
the median time of: a plain forward with transformers' default (sdpa) attention, a plain forward with
eager attention (which patterns need), ``opt_lens.capture``, and a capture whose ``[seq, vocab]`` logits are
then materialised; the ratios to the plain sdpa forward; the bytes the capture holds; and the peak resident memory a
capture (and, for reference, a plain forward) adds while it runs.

    python benchmarks/capture_cost.py [--lengths 64 256 1024] [--repeats 7] [--app-allocator]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch
from transformers import AutoModelForCausalLM, GPT2Config, OPTConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import opt_lens  # noqa: E402
import tiny_models  # noqa: E402
from opt_lens.loading import LoadedModel  # noqa: E402

MODELS = {
    "gpt2 (124M)": (GPT2Config(), tiny_models.gpt2_tokenizer),
    "opt-125m": (
        OPTConfig(
            num_hidden_layers=12, num_attention_heads=12, hidden_size=768, ffn_dim=3072, word_embed_proj_dim=768,
            max_position_embeddings=2048, vocab_size=50272,
        ),
        tiny_models.opt_tokenizer,
    ),
}


def peak_rss_increase(run) -> int:
    """Peak resident memory above the starting point while ``run`` executes, sampled every millisecond."""
    process = psutil.Process()
    start = process.memory_info().rss
    peak, done = start, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    del result
    return peak - start


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(label: str, config, make_tokenizer, lengths: list[int], repeats: int) -> None:
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval().requires_grad_(False)
    sdpa = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa").eval().requires_grad_(False)
    sdpa.load_state_dict(eager.state_dict())
    lm = LoadedModel(name=label, model=eager, tokenizer=make_tokenizer(), arch=opt_lens.describe(eager), source="local")
    print(f"\n{label}: {lm.arch.n_params:,} parameters, torch threads {torch.get_num_threads()}")
    print(f"{'tokens':>6} {'sdpa fwd':>9} {'eager fwd':>9} {'capture':>9} {'+logits':>9} {'cap/sdpa':>8} {'cap/eager':>9} {'+lg/sdpa':>8} {'held MB':>8} {'peak MB':>8} {'fwd pk':>7} {'attn':>7}")
    for length in lengths:
        ids = torch.randint(0, lm.arch.vocab_size, (length,), generator=torch.Generator().manual_seed(length))

        def plain(model):
            with torch.inference_mode():
                model(input_ids=ids[None], use_cache=False)

        t_sdpa = median_seconds(lambda: plain(sdpa), repeats)
        t_eager = median_seconds(lambda: plain(eager), repeats)
        t_capture = median_seconds(lambda: opt_lens.capture_ids(lm, ids), repeats)
        t_logits = median_seconds(lambda: opt_lens.capture_ids(lm, ids).logits, repeats)
        cap = opt_lens.capture_ids(lm, ids)
        peak_forward = peak_rss_increase(lambda: plain(sdpa))
        del cap
        peak_capture = peak_rss_increase(lambda: opt_lens.capture_ids(lm, ids))
        cap = opt_lens.capture_ids(lm, ids)
        print(
            f"{length:>6} {t_sdpa * 1e3:>7.1f}ms {t_eager * 1e3:>7.1f}ms {t_capture * 1e3:>7.1f}ms {t_logits * 1e3:>7.1f}ms"
            f" {t_capture / t_sdpa:>8.2f} {t_capture / t_eager:>9.2f} {t_logits / t_sdpa:>8.2f}"
            f" {cap.nbytes() / 1e6:>8.1f} {peak_capture / 1e6:>8.1f} {peak_forward / 1e6:>7.1f} {str(cap.attention.dtype).replace('torch.', ''):>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--app-allocator", action="store_true",
                        help="first make the allocator setting the app makes (memory.return_large_blocks_when_freed)")
    args = parser.parse_args()
    if args.app_allocator:
        opt_lens.memory.return_large_blocks_when_freed()
    print(f"allocator: {'the app setting' if args.app_allocator else 'glibc defaults'}")
    for label, (config, make_tokenizer) in MODELS.items():
        bench(label, config, make_tokenizer, args.lengths, args.repeats)


if __name__ == "__main__":
    main()
