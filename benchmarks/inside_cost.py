"""Cost of the views inside a head, inside an MLP and of information flow, on a cached capture.

A random-weight GPT-2-size (124M) model with the attention a loaded model uses (built as capture_cost.py
builds it), CPU, float32. The prompt is captured once per length (what the app's capture cache holds); each
view is then timed on that capture, the views interleaved, median of ``--repeats`` rounds. No view runs a
forward pass: each rebuilds the layers it reads from the capture's residual stream (a layer's query and key
states are rebuilt when the capture's small cache does not hold them, as on a layer switch in the app).
The flow graph is the issue's target: under 2 s at 256 tokens. Each view's CPU time is printed beside its
wall time: on a machine shared with other work, wall time includes waiting for a core.

Random weights give a sparse graph at the default threshold (the residual stream dominates every state), so the
flow graph is also timed at 0.01; a real model's graph keeps more nodes, and "one more attention node" is what
each further node kept at the last position costs (the parts of one state after attention and their
proximities), to scale the figure by.

    python benchmarks/inside_cost.py [--lengths 256 1024] [--repeats 3] [--threads 1]

Measured on 2026-12-04 with ``--threads 1`` on the 2-core machine shared with five other sessions' tests (load
6-8), median of 3 interleaved rounds, wall / CPU milliseconds:

    view                              256 tokens     1,024 tokens
    flow: one more attention node       45 / 23        110 / 72
    attention_steps                     24 / 13         92 / 56
    head_logits                         53 / 24         63 / 36
    neurons + 8 neuron_logits          148 / 74        141 / 95
    one neuron across the prompt       116 / 58        366 / 234
    flow_graph (0.04, 25 nodes)       1142 / 591      3562 / 1863
    flow_graph (0.01, 25 nodes)       1065 / 573      3786 / 1891

At 1,024 tokens the capture's 16 MB cache of query and key states holds two of GPT-2's twelve layers, so a flow
graph rebuilds every layer's states (at 256 tokens, ten of twelve fit: a walk from the top layer down still
misses each one).
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

import opt_lens  # noqa: E402
from capture_cost import MODELS, loaded, random_ids  # noqa: E402
from opt_lens import flow, inside  # noqa: E402


def views(lm, cap) -> dict:
    """Each view as the app's page calls it (layer 5, head 1, the last position)."""
    last = cap.seq_len - 1

    def top_neurons():
        top = opt_lens.neurons(lm, cap, 5, last).topk(8).indices.tolist()
        return opt_lens.neuron_logits(lm, cap, 5, top, last)

    def graph(threshold):
        return lambda: len(opt_lens.flow_graph(lm, cap, threshold=threshold).nodes)

    layer5 = inside.layer_inside(lm, cap, 5, [last])
    moved = flow._moved(lm, layer5, cap.seq_len)

    return {
        "flow: one more attention node": lambda: flow._attention_parts(lm, cap, layer5, 0, moved),
        "attention_steps": lambda: opt_lens.attention_steps(lm, cap, 5, 1, last),
        "head_logits": lambda: opt_lens.head_logits(lm, cap, 5, 1, last),
        "neurons + 8 neuron_logits": top_neurons,
        "one neuron across the prompt": lambda: inside.neuron_activations(lm, cap, 5, 0),
        "flow_graph (0.04)": graph(0.04),
        "flow_graph (0.01)": graph(0.01),
    }


def bench(lengths: list[int], repeats: int) -> None:
    label, (config, make_tokenizer, _) = next(iter(MODELS.items()))
    lm = loaded(label, config, make_tokenizer)
    for length in lengths:
        cap = opt_lens.capture_ids(lm, random_ids(lm, length))
        timed = views(lm, cap)
        wall, cpu = {name: [] for name in timed}, {name: [] for name in timed}
        for _ in range(repeats):
            for name, run in timed.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        nodes = {threshold: len(opt_lens.flow_graph(lm, cap, threshold=threshold).nodes) for threshold in (0.04, 0.01)}
        print(f"{label}, {length} tokens (flow graph nodes: {nodes[0.04]} at 0.04, {nodes[0.01]} at 0.01)")
        for name in timed:
            print(f"  {name:32s} {statistics.median(wall[name]) * 1000:8.0f} ms wall "
                  f"{statistics.median(cpu[name]) * 1000:8.0f} ms cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench(args.lengths, args.repeats)


if __name__ == "__main__":
    main()
