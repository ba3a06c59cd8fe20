"""Inside a head and an MLP, checked against independent references built here from the model's own run.

A reference model is the same saved weights under an attention function registered here through
``transformers.AttentionInterface``, which keeps the query, key and value states the model passes to it and
computes eager attention (softmax of scaled scores plus the mask) itself; plain forward hooks keep the output
projection's input, the MLP's hidden activations and the final residual stream. Nothing in opt_lens computes
them. Every model gets random biases, so that a bias counted in the wrong place shows.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from transformers import AttentionInterface, AutoModelForCausalLM
from transformers.masking_utils import AttentionMaskInterface, eager_mask

import opt_lens
import tiny_models
from test_causal import one_thread  # noqa: F401 (autouse fixture: one thread for tiny models)

PROMPT = "When Mary and John went to the store, John gave a drink to"
KINDS = ["gpt2", "opt", "opt-post-ln", "llama"]
PRE_LN = ["gpt2", "opt", "llama"]
# Where the hidden activations of the MLP enter its output projection, in transformers' own module names.
MLP_OUT = {"gpt2": "mlp.c_proj", "opt": "fc2", "opt-post-ln": "fc2", "llama": "mlp.down_proj"}
KEEPING = "test_keeping_qkv"
KEPT: dict = {}


def keeping_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Eager attention written out, keeping what the model passed in: ``KEPT[module] = (q, k, v, scaling, probs)``."""
    group = query.shape[1] // key.shape[1]
    key_h, value_h = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
    scores = query @ key_h.transpose(-1, -2) * scaling  # [batch, head, query, key]
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    probs = torch.softmax(scores.float(), dim=-1)
    KEPT[module] = (query[0], key[0], value[0], scaling, probs[0])
    return (probs @ value_h).transpose(1, 2).contiguous(), probs


AttentionInterface.register(KEEPING, keeping_attention)
AttentionMaskInterface.register(KEEPING, eager_mask)


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    """A factory of (opt_lens model, reference model) for a tiny model of ``kind`` with random biases."""

    @functools.cache
    def get(kind: str):
        model = tiny_models.build(kind)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("bias"):
                    parameter.normal_(0.0, tiny_models.INIT)
        folder = tmp_path_factory.mktemp(f"biased_{kind.replace('-', '_')}")
        model.save_pretrained(folder)
        (tiny_models.opt_tokenizer() if kind.startswith("opt") else tiny_models.gpt2_tokenizer()).save_pretrained(folder)
        reference = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=KEEPING).eval()
        return opt_lens.load(str(folder)), reference

    return get


def reference_run(kind, lm, reference, ids):
    """Per layer: q, k, v ``[head, seq, d_head]``, scaling, probs ``[head, query, key]``, the output projection's
    input ``[seq, n_heads * d_head]``, the MLP hidden ``[seq, d_mlp]``, its output, the state after attention;
    and the final residual ``[seq, d_model]`` and logits."""
    arch = lm.arch
    layers = [dict() for _ in range(arch.n_layers)]
    handles = []
    for layer, block in enumerate(reference.get_submodule(arch.paths.blocks)):
        keep = layers[layer]
        handles.append(block.get_submodule(arch.paths.attn_out_proj).register_forward_pre_hook(
            lambda m, args, keep=keep: keep.__setitem__("z", args[0].reshape(-1, args[0].shape[-1]))))
        handles.append(block.get_submodule(MLP_OUT[kind]).register_forward_pre_hook(
            lambda m, args, keep=keep: keep.__setitem__("hidden", args[0].reshape(-1, args[0].shape[-1]))))
    last = reference.get_submodule(arch.paths.block(arch.n_layers - 1))
    final = []
    handles.append(last.register_forward_hook(lambda m, a, out: final.append(out[0] if isinstance(out, tuple) else out)))
    KEPT.clear()
    try:
        with torch.no_grad():
            out = reference(input_ids=ids[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    for layer, block in enumerate(reference.get_submodule(arch.paths.blocks)):
        q, k, v, scaling, probs = KEPT[block.get_submodule(arch.paths.attn)]
        layers[layer].update(q=q, k=k, v=v, scaling=scaling, probs=probs)
    return layers, final[0][0], out.logits[0]


def head_matrix(out_proj: nn.Module, head: int, d_head: int) -> torch.Tensor:
    """``[d_head, d_model]``: head's rows of the output projection (nn.Linear stores the matrix transposed)."""
    w = out_proj.weight
    rows = slice(head * d_head, (head + 1) * d_head)
    return w[:, rows].T if isinstance(out_proj, nn.Linear) else w[rows]


def readout_reference(reference, lm, final: torch.Tensor) -> callable:
    """``v [.., d_model] -> [.., vocab]`` through the final norm frozen at ``final``, project_out and the unembedding."""
    norm = reference.get_submodule(lm.arch.paths.final_norm)
    if isinstance(norm, nn.LayerNorm):
        scale = torch.sqrt(final.var(unbiased=False) + norm.eps)

        def through_norm(v):
            return (v - v.mean(-1, keepdim=True)) / scale * norm.weight
    else:
        scale = torch.sqrt(final.pow(2).mean() + norm.variance_epsilon)

        def through_norm(v):
            return v / scale * norm.weight
    project = reference.get_submodule(lm.arch.paths.project_out).weight if lm.arch.paths.project_out else None
    unembed = reference.get_submodule(lm.arch.paths.unembed).weight

    def read(v):
        y = through_norm(v)
        return (y @ project.T if project is not None else y) @ unembed.T

    return read


@pytest.mark.parametrize("kind", KINDS)
def test_attention_steps_match_the_reference(biased, kind):
    lm, reference = biased(kind)
    cap = opt_lens.capture(lm, PROMPT)
    layers, _, _ = reference_run(kind, lm, reference, cap.input_ids)
    arch = lm.arch
    group = arch.n_heads // arch.n_kv_heads
    for layer, head, query in [(0, 1, 5), (1, 3, cap.seq_len - 1), (arch.n_layers - 1, 2, 9)]:
        ref = layers[layer]
        steps = opt_lens.attention_steps(lm, cap, layer, head, query)
        k, v = ref["k"][head // group, : query + 1], ref["v"][head // group, : query + 1]
        assert steps.keys.tolist() == list(range(query + 1))
        torch.testing.assert_close(steps.scores, k @ ref["q"][head, query], rtol=1e-5, atol=1e-5)
        assert steps.scaling == pytest.approx(ref["scaling"])
        torch.testing.assert_close(steps.scaled, steps.scores * ref["scaling"])
        torch.testing.assert_close(steps.probs, ref["probs"][head, query, : query + 1], rtol=0, atol=1e-5)
        assert (steps.probs - cap.pattern(layer, head)[query, : query + 1]).abs().max() <= 1e-6
        torch.testing.assert_close(steps.values, v, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(steps.weighted, steps.probs[:, None] * v, rtol=1e-5, atol=1e-5)
        z = ref["z"][query, head * arch.d_head : (head + 1) * arch.d_head]  # [d_head]
        out_proj = reference.get_submodule(arch.paths.attn_out_proj_of(layer))
        torch.testing.assert_close(steps.output, z @ head_matrix(out_proj, head, arch.d_head), rtol=1e-4, atol=1e-5)
        assert torch.isinf(steps.mask).sum() == 0  # a causal mask hides no key up to the query


@pytest.mark.parametrize("kind", KINDS)
def test_neurons_match_the_mlp_hidden_activations(biased, kind):
    lm, reference = biased(kind)
    cap = opt_lens.capture(lm, PROMPT)
    layers, _, _ = reference_run(kind, lm, reference, cap.input_ids)
    for layer in range(lm.arch.n_layers):
        for position in (0, 6, -1):
            torch.testing.assert_close(opt_lens.neurons(lm, cap, layer, position), layers[layer]["hidden"][position],
                                       rtol=1e-4, atol=1e-5)
    assert opt_lens.neurons(lm, cap, 0).shape == (lm.arch.d_mlp,)


@pytest.mark.parametrize("kind", PRE_LN)
def test_head_and_neuron_logits_match_the_reference_and_attribute(biased, kind):
    lm, reference = biased(kind)
    cap = opt_lens.capture(lm, PROMPT)
    layers, final, logits = reference_run(kind, lm, reference, cap.input_ids)
    arch, position = lm.arch, 9
    read = readout_reference(reference, lm, final[position])
    token = int(logits[position].argmax())
    attribution = opt_lens.attribute(lm, cap, token, position)
    for layer, head in [(0, 0), (1, 2), (arch.n_layers - 1, 3)]:
        out_proj = reference.get_submodule(arch.paths.attn_out_proj_of(layer))
        z = layers[layer]["z"][position, head * arch.d_head : (head + 1) * arch.d_head]
        expected = read(z @ head_matrix(out_proj, head, arch.d_head))  # [vocab]
        got = opt_lens.head_logits(lm, cap, layer, head, position)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        assert got[token].item() == pytest.approx(attribution.heads[layer, head].item(), abs=1e-4)
    for layer in range(arch.n_layers):
        mlp_out = reference.get_submodule(f"{arch.paths.block(layer)}.{MLP_OUT[kind]}")
        hidden = layers[layer]["hidden"][position]  # [d_mlp]
        w = mlp_out.weight.T if isinstance(mlp_out, nn.Linear) else mlp_out.weight  # [d_mlp, d_model]
        torch.testing.assert_close(opt_lens.neuron_logits(lm, cap, layer, 7, position), read(hidden[7] * w[7]),
                                   rtol=1e-4, atol=1e-4)
        every = opt_lens.neuron_logits(lm, cap, layer, list(range(arch.d_mlp)), position)  # [neuron, vocab]
        bias = mlp_out.bias if mlp_out.bias is not None else torch.zeros(arch.d_model)
        summed = every[:, token].sum().item() + read(bias)[token].item()
        assert summed == pytest.approx(attribution.mlps[layer].item(), abs=1e-3)


@pytest.mark.parametrize("function", ["head_logits", "neuron_logits", "flow_graph"])
def test_post_ln_models_are_refused_with_one_sentence(biased, function):
    lm, _ = biased("opt-post-ln")
    cap = opt_lens.capture(lm, PROMPT)
    call = {"head_logits": lambda: opt_lens.head_logits(lm, cap, 0, 0),
            "neuron_logits": lambda: opt_lens.neuron_logits(lm, cap, 0, 0),
            "flow_graph": lambda: opt_lens.flow_graph(lm, cap)}[function]
    with pytest.raises(opt_lens.OptLensError, match="pre-LN model") as refused:
        call()
    assert str(refused.value).count(". ") == 0


def test_undescribed_families_bad_arguments_and_ablated_captures_are_refused(biased, tiny_lm):
    lm, _ = biased("gpt2")
    cap = opt_lens.capture(lm, PROMPT)
    for call, message in [
        (lambda: opt_lens.attention_steps(lm, cap, 0, 4, 3), "no head 4"),
        (lambda: opt_lens.attention_steps(lm, cap, 3, 0, 3), "no layer 3"),
        (lambda: opt_lens.neurons(lm, cap, 0, 99), "outside this prompt"),
        (lambda: opt_lens.neuron_logits(lm, cap, 0, lm.arch.d_mlp), "numbered 0-255"),
        (lambda: opt_lens.neurons(lm, opt_lens.capture(lm, PROMPT, ablate=[(0, 1)]), 0), "unablated"),
        (lambda: opt_lens.neurons(lm, opt_lens.capture(lm, PROMPT, attention_prefix=4), 0), "first 4 tokens"),
    ]:
        with pytest.raises(opt_lens.OptLensError, match=message):
            call()
    neox = tiny_lm("gpt_neox")
    with pytest.raises(opt_lens.OptLensError, match="does not know the inside of a 'gpt_neox' block"):
        opt_lens.neurons(neox, opt_lens.capture(neox, PROMPT), 0)


def test_a_block_the_description_misses_is_refused(biased, monkeypatch):
    """A wrong description (GPT-2's MLP read without its activation: dropout, the identity in eval) gives another block output: refused."""
    from opt_lens import anatomy

    lm, _ = biased("gpt2")
    cap = opt_lens.capture(lm, PROMPT)
    wrong = anatomy.BlockInside("ln_1", "attn.c_attn", (2, 3), "ln_2", ("mlp.c_fc",), "mlp.dropout", "mlp.c_proj")
    monkeypatch.setitem(anatomy.INSIDES, "gpt2", wrong)
    with pytest.raises(opt_lens.OptLensError, match="cannot be shown faithfully"):
        opt_lens.neurons(lm, cap, 0)


def test_demo_induction_head_promotes_the_token_after_the_earlier_copy():
    """On random tokens shown twice, demo/tiny-gpt2's induction head L1.H2 (the app's, see README) writes toward the token that followed
    the current token's earlier copy: that token is its most promoted."""
    lm = opt_lens.load("demo/tiny-gpt2")
    torch.manual_seed(0)
    first = torch.randint(100, 2000, (12,))
    cap = opt_lens.capture_ids(lm, torch.cat([first, first[:6]]))
    promoted = opt_lens.head_logits(lm, cap, 1, 2).argmax().item()
    assert promoted == first[6].item()
