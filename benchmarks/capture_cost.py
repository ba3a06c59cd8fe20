"""Capture cost against a plain transformers forward pass of the same weights, and the memory a capture holds.

Random-weight models, CPU, float32: GPT-2-size (124M) at 64, 256 and 1024 tokens and OPT-125m-size at 2048,
each against a plain forward with transformers' sdpa attention of a second copy of the same weights, timed
interleaved (sdpa, capture, sdpa, capture, ...) and compared as medians. For each length it prints both
medians and their ratio (target: at most 1.05), the bytes the capture holds (targets: 120 MB for GPT-2 at
1024, 200 MB for OPT-125m at 2048; a capture holds the residual stream and room for the few layers whose
query and key states it rebuilds on demand), the peak resident memory a capture and a plain forward add, the
time and peak of the head scores (previous-token, first-token, entropy, duplicate-token) on the capture, and
the median time of a layer's first pattern read (its states rebuilt: what a layer switch costs). Then an
OPT-1.3b-size model at 2048 tokens (5.3 GB of weights; skip with --skip-large): capture and head scores, time
and peak memory.

    python benchmarks/capture_cost.py [--repeats 9] [--threads 1] [--skip-large] [--app-allocator]
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
from opt_lens import attention, heads  # noqa: E402
from opt_lens.loading import LoadedModel  # noqa: E402


def opt_config(layers: int, heads_: int, width: int) -> OPTConfig:
    return OPTConfig(
        num_hidden_layers=layers, num_attention_heads=heads_, hidden_size=width, ffn_dim=4 * width,
        word_embed_proj_dim=width, max_position_embeddings=2048, vocab_size=50272,
    )


# label: (config, tokenizer, lengths)
MODELS = {
    "gpt2 (124M)": (GPT2Config(), tiny_models.gpt2_tokenizer, [64, 256, 1024]),
    "opt-125m": (opt_config(12, 12, 768), tiny_models.opt_tokenizer, [2048]),
}
LARGE = ("opt-1.3b", opt_config(24, 32, 2048), tiny_models.opt_tokenizer, 2048)


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


def interleaved_medians(runs: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each run, the runs taking turns so that a slow spell of the machine hits all of them."""
    for run in runs.values():
        run()  # warm-up: first calls allocate and pick kernels
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def timed(run) -> tuple[float, int]:
    """Seconds and peak resident memory added by one call of ``run``."""
    start = time.perf_counter()
    peak = peak_rss_increase(run)
    return time.perf_counter() - start, peak


def loaded(label: str, config, make_tokenizer) -> LoadedModel:
    torch.manual_seed(0)
    attention.register()  # as opt_lens.load does before building a model
    model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=attention.IMPLEMENTATION)
    model.eval().requires_grad_(False)
    return LoadedModel(name=label, model=model, tokenizer=make_tokenizer(), arch=opt_lens.describe(model), source="local")


def random_ids(lm: LoadedModel, length: int) -> torch.Tensor:
    return torch.randint(0, lm.arch.vocab_size, (length,), generator=torch.Generator().manual_seed(length))  # [seq]


def prompt_scores(cap) -> dict:
    return heads.prompt_scores(cap.patterns, cap.input_ids)


def first_pattern_read(cap) -> float:
    """Median seconds of a layer's first pattern read on a fresh capture: the layer's query and key states are
    rebuilt (what a layer switch on the Attention page pays when the layer is not cached)."""
    seconds = []
    for layer in range(cap.patterns.n_layers):
        start = time.perf_counter()
        cap.pattern(layer, 0)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def bench(label: str, config, make_tokenizer, lengths: list[int], repeats: int) -> None:
    lm = loaded(label, config, make_tokenizer)
    # A copy of the config: from_config records the implementation in it, and the capture reads it there.
    sdpa = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa").eval().requires_grad_(False)
    sdpa.load_state_dict(lm.model.state_dict())
    print(f"\n{label}: {lm.arch.n_params:,} parameters, {lm.arch.attention_capture}, torch threads {torch.get_num_threads()}")
    print(f"{'tokens':>6} {'sdpa fwd':>9} {'capture':>9} {'ratio':>6} {'held MB':>8} {'cap pk MB':>9} {'fwd pk MB':>9} {'scores':>8} {'sc pk MB':>8} {'1st read':>8}")
    for length in lengths:
        ids = random_ids(lm, length)

        def plain():
            with torch.inference_mode():
                sdpa(input_ids=ids[None], use_cache=False, logits_to_keep=1)

        medians = interleaved_medians({"sdpa": plain, "capture": lambda: opt_lens.capture_ids(lm, ids)}, repeats)
        peak_forward = peak_rss_increase(plain)
        peak_capture = peak_rss_increase(lambda: opt_lens.capture_ids(lm, ids))
        cap = opt_lens.capture_ids(lm, ids)
        scores_seconds, scores_peak = timed(lambda: prompt_scores(cap))
        first_read = first_pattern_read(opt_lens.capture_ids(lm, ids))
        print(
            f"{length:>6} {medians['sdpa'] * 1e3:>7.1f}ms {medians['capture'] * 1e3:>7.1f}ms"
            f" {medians['capture'] / medians['sdpa']:>6.3f} {cap.nbytes() / 1e6:>8.1f} {peak_capture / 1e6:>9.1f}"
            f" {peak_forward / 1e6:>9.1f} {scores_seconds:>7.2f}s {scores_peak / 1e6:>8.1f} {first_read * 1e3:>6.1f}ms"
        )


def bench_large() -> None:
    label, config, make_tokenizer, length = LARGE
    lm = loaded(label, config, make_tokenizer)
    ids = random_ids(lm, length)
    print(f"\n{label}: {lm.arch.n_params:,} parameters, {length} tokens, resident {psutil.Process().memory_info().rss / 2**30:.1f} GiB")
    holder = []
    seconds, peak = timed(lambda: holder.append(opt_lens.capture_ids(lm, ids)))
    cap = holder[0]
    print(f"capture      {seconds:>6.2f} s, peak +{peak / 1e6:,.0f} MB, holds {cap.nbytes() / 1e6:,.0f} MB")
    seconds, peak = timed(lambda: prompt_scores(cap))
    print(f"head scores  {seconds:>6.2f} s, peak +{peak / 1e6:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice); 1 is steadier on a busy machine")
    parser.add_argument("--skip-large", action="store_true", help="leave out the OPT-1.3b-size model")
    parser.add_argument("--app-allocator", action="store_true",
                        help="first make the allocator setting the app makes (memory.return_large_blocks_when_freed)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.app_allocator:
        opt_lens.memory.return_large_blocks_when_freed()
    print(f"allocator: {'the app setting' if args.app_allocator else 'glibc defaults'}")
    for label, (config, make_tokenizer, lengths) in MODELS.items():
        bench(label, config, make_tokenizer, lengths, args.repeats)
    if not args.skip_large:
        bench_large()


if __name__ == "__main__":
    main()
