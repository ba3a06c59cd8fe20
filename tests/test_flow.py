"""Information flow routes, checked against parts and proximities rebuilt here from the reference run of
test_inside (the model's own query, key and value states and forward hooks; nothing from opt_lens)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import opt_lens
from opt_lens.flow import FlowNode, node_contributions
from test_inside import PRE_LN, PROMPT, biased, head_matrix, one_thread, reference_run  # noqa: F401 (fixtures)

# The norm whose input is the state after attention, in transformers' own module names.
MLP_NORM = {"gpt2": "ln_2", "opt": "final_layer_norm", "llama": "post_attention_layernorm"}


def reference_states(kind, lm, reference, ids):
    """Per layer, the block's input and the state after attention ``[seq, d_model]`` and its output."""
    arch, seen = lm.arch, {}
    handles = []
    for layer, block in enumerate(reference.get_submodule(arch.paths.blocks)):
        handles.append(block.register_forward_pre_hook(
            lambda m, args, kwargs, layer=layer: seen.__setitem__(("in", layer), (args[0] if args else kwargs["hidden_states"])[0]),
            with_kwargs=True))
        handles.append(block.get_submodule(MLP_NORM[kind]).register_forward_pre_hook(
            lambda m, args, layer=layer: seen.__setitem__(("mid", layer), args[0].reshape(-1, args[0].shape[-1]))))
        handles.append(block.register_forward_hook(
            lambda m, a, out, layer=layer: seen.__setitem__(("out", layer), (out[0] if isinstance(out, tuple) else out)[0])))
    try:
        with torch.no_grad():
            reference(input_ids=ids[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def proximity_reference(parts: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    raw = torch.stack([torch.clamp(total.abs().sum() - (total - part).abs().sum(), min=0) for part in parts])
    return raw / raw.sum()


@pytest.mark.parametrize("kind", PRE_LN)
def test_parts_add_up_to_each_state_and_contributions_match_the_reference(biased, kind):
    lm, reference = biased(kind)
    cap = opt_lens.capture(lm, PROMPT)
    layers, _, _ = reference_run(kind, lm, reference, cap.input_ids)
    states = reference_states(kind, lm, reference, cap.input_ids)
    arch, query = lm.arch, 9
    group = arch.n_heads // arch.n_kv_heads
    for layer in range(arch.n_layers):
        attention = node_contributions(lm, cap, FlowNode(2 * layer + 1, query))
        torch.testing.assert_close(attention.vectors.sum(0), states["mid", layer][query], rtol=1e-4, atol=1e-4)
        out_proj = reference.get_submodule(arch.paths.attn_out_proj_of(layer))
        probs, v = layers[layer]["probs"], layers[layer]["v"]
        per_key = [probs[h, query, j] * (v[h // group, j] @ head_matrix(out_proj, h, arch.d_head))
                   for h in range(arch.n_heads) for j in range(query + 1)]
        bias = out_proj.bias if out_proj.bias is not None else torch.zeros(arch.d_model)
        parts = torch.stack([states["in", layer][query], *per_key, bias])
        torch.testing.assert_close(attention.weights, proximity_reference(parts, states["mid", layer][query]),
                                   rtol=1e-3, atol=1e-5)
        assert attention.kinds[0] == "residual" and attention.kinds[-1] == "bias"
        assert attention.source(1 + 2 * (query + 1) + 4) == FlowNode(2 * layer, 4) and attention.heads[1 + 2 * (query + 1)] == 2
        assert attention.source(0) == FlowNode(2 * layer, query) and attention.source(len(attention.kinds) - 1) is None
        block = node_contributions(lm, cap, FlowNode(2 * layer + 2, query))
        torch.testing.assert_close(block.vectors.sum(0), states["out", layer][query], rtol=1e-4, atol=1e-4)
        mlp = states["out", layer][query] - states["mid", layer][query]
        expected = proximity_reference(torch.stack([states["mid", layer][query], mlp]), states["out", layer][query])
        torch.testing.assert_close(block.weights, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kind", PRE_LN)
@pytest.mark.parametrize("threshold", [0.01, 0.04, 0.2])
def test_kept_and_pruned_account_for_every_update(biased, kind, threshold):
    lm, _ = biased(kind)
    cap = opt_lens.capture(lm, PROMPT)
    graph = opt_lens.flow_graph(lm, cap, position=-1, threshold=threshold)
    top = FlowNode(2 * lm.arch.n_layers, cap.seq_len - 1)
    assert top in graph.nodes and top in graph.kept and graph.token_id == int(cap.next_logits.argmax())
    for node in graph.kept:
        parts = node_contributions(lm, cap, node)
        edges = [e for e in graph.edges if e.target == node]
        assert graph.kept[node] + graph.pruned[node] == pytest.approx(1.0, abs=1e-5)
        assert graph.kept[node] == pytest.approx(sum(e.weight for e in edges), abs=1e-6)
        over = [i for i, w in enumerate(parts.weights.tolist()) if w > threshold and parts.kinds[i] != "bias"]
        assert len(edges) == len(over) and all(e.weight > threshold for e in edges)
        assert all(e.source in graph.nodes and e.source.depth == node.depth - 1 for e in edges)
    expanded = {n for n in graph.nodes if n.depth > 0}
    assert expanded == set(graph.kept)  # every node reached (but the embeddings) was expanded in turn


def test_flow_refuses_bad_thresholds_and_positions(biased):
    lm, _ = biased("gpt2")
    cap = opt_lens.capture(lm, PROMPT)
    for threshold in (-0.1, 1.0):
        with pytest.raises(opt_lens.OptLensError, match="between 0 and 1"):
            opt_lens.flow_graph(lm, cap, threshold=threshold)
    with pytest.raises(opt_lens.OptLensError, match="outside this prompt"):
        opt_lens.flow_graph(lm, cap, position=cap.seq_len)


def test_demo_induction_route_reads_the_token_after_the_earlier_copy():
    """On random tokens shown twice, the route into the last position runs through the induction heads from
    the token after the earlier copy of the current one."""
    lm = opt_lens.load("demo/tiny-gpt2")
    torch.manual_seed(0)
    first = torch.randint(100, 2000, (12,))
    cap = opt_lens.capture_ids(lm, torch.cat([first, first[:6]]))
    graph = opt_lens.flow_graph(lm, cap)
    into_last = [e for e in graph.edges if e.kind == "attention" and e.target == FlowNode(3, 17)]
    assert {e.source.position for e in into_last} >= {6}
    assert {e.head for e in into_last if e.source.position == 6} >= {2}
