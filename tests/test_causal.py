"""Cause and effect, checked against independent references built here from plain transformers forward hooks.

Each reference registers its own hooks with ``register_forward_hook`` / ``register_forward_pre_hook`` on
``lm.model``'s modules, runs ``lm.model`` itself and reads its logits; nothing in opt_lens computes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import pytest
import torch
from torch import nn
from transformers import Olmo2Config, OPTConfig

import opt_lens
import tiny_models
from opt_lens import heads

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
ALL_FAMILIES = ["gpt2", "opt", "opt-post-ln", "gpt_neo", "gpt_neox", "llama", "qwen2"]


# ---------------------------------------------------------------- independent references


@contextlib.contextmanager
def plain_hooks(*registrations):
    """``(module, kind, fn)`` with kind "pre" or "post", registered with torch's own calls."""
    handles = []
    try:
        for module, kind, fn in registrations:
            register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
            handles.append(register(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def sub(lm, path):
    return lm.model.get_submodule(path)


def model_logits(lm, ids, *registrations):
    with torch.no_grad(), plain_hooks(*registrations):
        return lm.model(input_ids=ids[None], use_cache=False).logits[0]  # [seq, vocab]


def out_proj_inputs(lm, ids):
    """Per layer, the attention output projection's input ``[seq, n_heads * d_head]`` in an unablated run."""
    seen = {}

    def keep(layer):
        return lambda module, args: seen.__setitem__(layer, args[0][0].clone())

    regs = [(sub(lm, lm.arch.paths.attn_out_proj_of(layer)), "pre", keep(layer)) for layer in range(lm.arch.n_layers)]
    model_logits(lm, ids, *regs)
    return seen


def set_head(lm, layer, head, value):
    """A pre-hook putting ``value`` (a scalar or ``[seq, d_head]``) into head's slice of the out_proj input."""
    d = lm.arch.d_head

    def hook(module, args):
        z = args[0].clone()
        z[..., head * d : (head + 1) * d] = value
        return (z,)

    return sub(lm, lm.arch.paths.attn_out_proj_of(layer)), "pre", hook


def ids_of(lm, text):
    return torch.tensor(lm.tokenizer(text)["input_ids"])


def token_id(lm, text):
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"][0]


def no_hooks_anywhere(model):
    """No hook of ours is left. transformers 5 installs output-capturing hooks of its own, for good, the first
    time a model is asked for output_attentions or output_hidden_states (a reference run in another test)."""
    hooks = [hook for m in model.modules() for hook in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return all(hook.__module__.startswith("transformers.") for hook in hooks)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from two threads, and on a loaded machine two threads spin against each other
    (a 14-token forward of a tiny model: 1.2 s with two, 0.05 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def opt_pre_ln_projected(tmp_path_factory):
    """Pre-LN OPT with a 32-wide embedding projected in and out (no checkpoint has it, transformers allows it),
    with nonzero biases everywhere."""
    torch.manual_seed(0)
    config = OPTConfig(
        num_hidden_layers=3, num_attention_heads=4, hidden_size=64, ffn_dim=128, max_position_embeddings=128,
        vocab_size=tiny_models.OPT_VOCAB, word_embed_proj_dim=32, init_std=tiny_models.INIT,
    )
    model = tiny_models.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # transformers starts biases at zero: random ones make the attribution's `rest` count
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, tiny_models.INIT)
    folder = tmp_path_factory.mktemp("opt_projected")
    model.save_pretrained(folder)
    tiny_models.opt_tokenizer().save_pretrained(folder)
    lm = opt_lens.load(str(folder))
    assert lm.arch.norm == "pre" and lm.arch.paths.project_out is not None
    return lm


# ---------------------------------------------------------------- ablation in capture


@pytest.mark.parametrize("kind", [*ALL_FAMILIES, "projected"])
def test_zero_ablation_matches_hand_ablated_run(tiny_lm, opt_pre_ln_projected, kind):
    lm = opt_pre_ln_projected if kind == "projected" else tiny_lm(kind)  # projected: pre-LN OPT with project_in/out
    ids = ids_of(lm, PROMPT)
    knocked = [(0, 1), (1, 3), (1, 0)]
    expected = model_logits(lm, ids, *(set_head(lm, layer, head, 0.0) for layer, head in knocked))
    cap = opt_lens.capture(lm, PROMPT, ablate=knocked)
    torch.testing.assert_close(cap.logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cap.next_logits, expected[-1], rtol=1e-4, atol=1e-4)
    assert (cap.logits - opt_lens.capture(lm, PROMPT).logits).abs().max() > 0.1  # the heads mattered
    assert cap.ablation.heads == tuple(sorted(knocked))


@pytest.mark.parametrize("kind", ["gpt2", "opt-post-ln", "llama"])
def test_mean_ablation_and_mlp_ablation_match_hand_ablated_run(tiny_lm, kind):
    lm = tiny_lm(kind)
    ids = ids_of(lm, PROMPT)
    d = lm.arch.d_head
    head_mean = out_proj_inputs(lm, ids)[1][:, 2 * d : 3 * d].mean(0)  # [d_head] over positions, unablated
    mlp = sub(lm, lm.arch.paths.mlp_out_of(0))
    seen = []
    model_logits(lm, ids, (mlp, "post", lambda m, a, out: seen.append(out.clone())))
    mlp_mean = seen[0].reshape(-1, seen[0].shape[-1]).mean(0)  # [d_model] (OPT's fc2 sees [seq, d])

    expected = model_logits(
        lm, ids, set_head(lm, 1, 2, head_mean), (mlp, "post", lambda m, a, out: mlp_mean.expand_as(out))
    )
    cap = opt_lens.capture(lm, PROMPT, ablate=[(1, 2)], ablate_mlps=[0], ablate_with="mean")
    torch.testing.assert_close(cap.logits, expected, rtol=1e-4, atol=1e-4)

    zeroed = model_logits(lm, ids, (mlp, "post", lambda m, a, out: torch.zeros_like(out)))
    torch.testing.assert_close(opt_lens.capture(lm, PROMPT, ablate_mlps=[0]).logits, zeroed, rtol=1e-4, atol=1e-4)


def down_proj_inputs(lm, ids, layer):
    """The MLP's hidden activations ``[seq, d_mlp]`` at ``layer`` (its output projection's input), unablated."""
    seen = []
    model_logits(lm, ids, (sub(lm, lm.arch.paths.mlp_down_of(layer)), "pre", lambda m, args: seen.append(args[0].clone())))
    return seen[0].reshape(-1, lm.arch.d_mlp)  # OPT's fc2 sees [seq, d_mlp], GPT-2's c_proj [1, seq, d_mlp]


def set_neurons(lm, layer, neurons, values):
    """A pre-hook on the MLP's output projection putting ``values[i]`` into neuron ``neurons[i]`` everywhere."""

    def hook(module, args):
        hidden = args[0].clone()
        for neuron, value in zip(neurons, values):
            hidden[..., neuron] = value
        return (hidden,)

    return sub(lm, lm.arch.paths.mlp_down_of(layer)), "pre", hook


@pytest.mark.parametrize("kind", ["gpt2", "opt", "opt-post-ln"])
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_neuron_ablation_matches_hand_ablated_run(tiny_lm, kind, mode):
    lm = tiny_lm(kind)
    ids = ids_of(lm, PROMPT)
    knocked = {0: [5, 37, 100], 2: [1]}
    values = {layer: down_proj_inputs(lm, ids, layer).mean(0)[neurons] if mode == "mean" else [0.0] * len(neurons)
              for layer, neurons in knocked.items()}  # mean: each neuron's mean over the prompt, unablated
    expected = model_logits(lm, ids, *(set_neurons(lm, layer, neurons, values[layer]) for layer, neurons in knocked.items()))
    pairs = [(layer, neuron) for layer, neurons in knocked.items() for neuron in neurons]
    cap = opt_lens.capture(lm, PROMPT, ablate_neurons=pairs, ablate_with=mode, points=("mlp_hidden",))
    torch.testing.assert_close(cap.logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cap.next_logits, expected[-1], rtol=1e-4, atol=1e-4)
    assert (cap.logits - opt_lens.capture(lm, PROMPT).logits).abs().max() > 1e-3  # the neurons mattered
    assert cap.ablation.neurons == tuple(sorted(pairs)) and cap.ablation.mode == mode
    for layer, neurons in knocked.items():  # the recorded and the rebuilt neurons are the ablated run's
        expected_hidden = torch.as_tensor(values[layer], dtype=cap.mlp_hidden.dtype).expand(len(ids), -1)
        torch.testing.assert_close(cap.mlp_hidden[layer][:, neurons], expected_hidden, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(opt_lens.capture(lm, PROMPT, ablate_neurons=pairs, ablate_with=mode).point("mlp_hidden", layer),
                                   cap.mlp_hidden[layer], rtol=1e-5, atol=1e-5)


def test_ablated_attention_and_resid_describe_the_ablated_run(tiny_lm):
    """Against transformers' eager attention on the same weights, with the head zeroed by a plain pre-hook."""
    lm = tiny_lm("gpt2")
    eager = tiny_models.build("gpt2")  # the weights tiny_lm saved (same seed), eager attention
    ids = ids_of(lm, PROMPT)
    d = lm.arch.d_head

    def zero_head_1(module, args):
        z = args[0].clone()
        z[..., 1 * d : 2 * d] = 0.0
        return (z,)

    blocks = []
    regs = [(eager.get_submodule(lm.arch.paths.attn_out_proj_of(0)), "pre", zero_head_1)]
    regs += [(eager.get_submodule(lm.arch.paths.block(l)), "post",
              lambda m, a, out: blocks.append((out[0] if isinstance(out, tuple) else out)[0].clone()))
             for l in range(lm.arch.n_layers)]
    with torch.no_grad(), plain_hooks(*regs):
        attn = eager(input_ids=ids[None], use_cache=False, output_attentions=True).attentions
    cap = opt_lens.capture(lm, PROMPT, ablate=[(0, 1)])
    torch.testing.assert_close(cap.resid[1:], torch.stack(blocks), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cap.attention, torch.stack([a[0] for a in attn]), rtol=1e-5, atol=1e-5)


def test_invalid_ablations_are_refused(tiny_lm):
    lm = tiny_lm("gpt2")
    for kwargs in ({"ablate": [(3, 0)]}, {"ablate": [(0, 4)]}, {"ablate": [(0, -1)]}, {"ablate": ["L0H1"]},
                   {"ablate": [(0, 1)], "ablate_with": "resample"}, {"ablate_mlps": [7]}, {"ablate_mlps": ["1"]},
                   {"ablate_neurons": [(0, 512)]}, {"ablate_neurons": [(3, 0)]}, {"ablate_neurons": [(0, -1)]},
                   {"ablate_neurons": [7]}, {"ablate_neurons": ["L0N1"]}):
        with pytest.raises(opt_lens.OptLensError):
            opt_lens.capture(lm, PROMPT, **kwargs)
    assert no_hooks_anywhere(lm.model)


def test_neurons_of_a_model_whose_mlp_output_projection_is_unknown_are_refused(tiny_lm):
    arch = tiny_lm("gpt2").arch
    unknown = dataclasses.replace(arch, paths=dataclasses.replace(arch.paths, mlp_down=None))
    with pytest.raises(opt_lens.OptLensError, match="cannot knock a neuron out"):
        opt_lens.ablation.ablation_spec(unknown, neurons=[(0, 1)])
    assert opt_lens.ablation.ablation_spec(unknown, mlps=[0]).mlps == (0,)  # a whole MLP needs no neuron


def test_shared_model_is_left_exactly_as_it_was(tiny_lm):
    lm = tiny_lm("opt")
    before = opt_lens.capture(lm, PROMPT)
    opt_lens.capture(lm, PROMPT, ablate=[(0, 0), (2, 3)], ablate_mlps=[1], ablate_with="mean")
    opt_lens.capture(lm, PROMPT, ablate_neurons=[(0, 3), (2, 7)], ablate_with="mean")
    opt_lens.capture(lm, PROMPT, ablate_neurons=[(1, 3)], points=("mlp_hidden",))
    after = opt_lens.capture(lm, PROMPT)
    assert no_hooks_anywhere(lm.model)
    for field in ("attention", "resid", "logits", "next_logits"):
        assert torch.equal(getattr(before, field), getattr(after, field)), field


# ---------------------------------------------------------------- head_effects


@pytest.mark.parametrize("kind,position,heads_per_batch",
                         [("gpt2", -1, None), ("opt-post-ln", -1, None), ("llama", 6, None), ("gpt_neo", -1, None),
                          ("gpt2", -1, 3), ("llama", 6, 1)])
def test_head_effects_cells_equal_single_ablations(tiny_lm, kind, position, heads_per_batch, monkeypatch):
    lm = tiny_lm(kind)
    ids = ids_of(lm, PROMPT)
    if heads_per_batch:  # as a long prompt runs: a few heads' variants per batch
        monkeypatch.setattr(opt_lens.sweeps, "ROWS_PER_BATCH", heads_per_batch * len(ids[: position % len(ids) + 1]))
    clean = torch.log_softmax(model_logits(lm, ids)[position], -1)  # [vocab]
    target = int(clean.argmax())
    calls = []
    effects = opt_lens.head_effects(lm, PROMPT, position=position, progress=lambda done, total: calls.append((done, total)))
    assert effects.shape == (lm.arch.n_layers, lm.arch.n_heads)
    for layer in range(lm.arch.n_layers):
        for head in range(lm.arch.n_heads):
            ablated = torch.log_softmax(model_logits(lm, ids, set_head(lm, layer, head, 0.0))[position], -1)
            assert effects[layer, head].item() == pytest.approx((ablated[target] - clean[target]).item(), abs=2e-4)
    n_layers, n_heads = lm.arch.n_layers, lm.arch.n_heads
    n, per_batch = n_layers * n_heads, heads_per_batch or n_heads
    expected = []  # after each block of a batch, the count before it (a chance to stop); after the batch, its end
    for layer in range(n_layers):
        for start in range(0, n_heads, per_batch):
            expected += [(layer * n_heads + start, n)] * (n_layers - layer)
            expected.append((layer * n_heads + min(start + per_batch, n_heads), n))
    assert calls == expected
    other = token_id(lm, " Mary")
    ablated = torch.log_softmax(model_logits(lm, ids, set_head(lm, 1, 2, 0.0))[position], -1)
    by_token = opt_lens.head_effects(lm, PROMPT, token_id=other, position=position)
    assert by_token[1, 2].item() == pytest.approx((ablated[other] - clean[other]).item(), abs=2e-4)


def test_head_effects_refuses_bad_positions_and_tokens(tiny_lm):
    lm = tiny_lm("gpt2")
    with pytest.raises(opt_lens.OptLensError, match="outside"):
        opt_lens.head_effects(lm, PROMPT, position=100)
    with pytest.raises(opt_lens.OptLensError, match="vocabulary"):
        opt_lens.head_effects(lm, PROMPT, token_id=10**6)


def test_failure_mid_sweep_leaves_no_hooks_and_the_model_unchanged(tiny_lm):
    lm = tiny_lm("gpt2")
    before = opt_lens.capture(lm, PROMPT)

    def fail(done, total):
        if done > lm.arch.n_heads:
            raise RuntimeError("student closed the page")

    for sweep in (
        lambda: opt_lens.head_effects(lm, PROMPT, progress=fail),
        lambda: opt_lens.patch_heads(lm, PROMPT, CORRUPTED, answer_id=token_id(lm, " Mary"),
                                     wrong_id=token_id(lm, " John"), progress=fail),
        lambda: opt_lens.patch_resid(lm, PROMPT, CORRUPTED, answer_id=token_id(lm, " Mary"),
                                     wrong_id=token_id(lm, " John"), progress=fail),
    ):
        with pytest.raises(RuntimeError, match="closed the page"):
            sweep()
        assert no_hooks_anywhere(lm.model)
        assert not lm.lock.locked()

    def out_of_memory(module, args, output):  # a failure inside a batched rerun, while opt_lens' hooks are on
        if (output[0] if isinstance(output, tuple) else output).shape[0] > 1:
            raise RuntimeError("out of memory")

    for sweep in (
        lambda: opt_lens.head_effects(lm, PROMPT),
        lambda: opt_lens.patch_heads(lm, PROMPT, CORRUPTED, answer_id=token_id(lm, " Mary"), wrong_id=token_id(lm, " John")),
    ):
        with plain_hooks((sub(lm, lm.arch.paths.block(lm.arch.n_layers - 1)), "post", out_of_memory)):
            with pytest.raises(RuntimeError, match="out of memory"):
                sweep()
        assert no_hooks_anywhere(lm.model)
        assert not lm.lock.locked()
        after = opt_lens.capture(lm, PROMPT)
        for field in ("attention", "resid", "logits", "next_logits"):
            assert torch.equal(getattr(before, field), getattr(after, field)), field


def test_sweep_and_captures_in_parallel_threads_match_solo_runs(tiny_lm):
    lm = tiny_lm("opt")
    texts = [PROMPT, "The cat sat on the mat because it was warm", CORRUPTED]
    solo_captures = [opt_lens.capture(lm, text) for text in texts]
    solo_effects = opt_lens.head_effects(lm, PROMPT)
    results, errors = {}, []

    def sweep():
        try:
            results["effects"] = [opt_lens.head_effects(lm, PROMPT) for _ in range(3)]
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    def captures(i):
        try:
            results[i] = [opt_lens.capture(lm, texts[i]) for _ in range(6)]
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=sweep)] + [threading.Thread(target=captures, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert all(torch.equal(effects, solo_effects) for effects in results["effects"])
    for i, solo in enumerate(solo_captures):
        for cap in results[i]:
            for field in ("attention", "resid", "logits", "next_logits"):
                assert torch.equal(getattr(cap, field), getattr(solo, field)), (i, field)
    assert no_hooks_anywhere(lm.model)


# ---------------------------------------------------------------- direct logit attribution


def frozen_readout_reference(lm, ids, token, position):
    """Each head's output ``[layer, head, d_model]`` and the final residual, through the final norm frozen at
    the run's scale, then project_out and the unembedding row; written out per family's norm."""
    arch = lm.arch
    z = out_proj_inputs(lm, ids)
    finals = []
    model_logits(lm, ids, (sub(lm, arch.paths.block(arch.n_layers - 1)), "post",
                           lambda m, a, out: finals.append((out[0] if isinstance(out, tuple) else out)[0, position])))
    x = finals[0]  # [d_model]
    norm = sub(lm, arch.paths.final_norm)
    if isinstance(norm, nn.LayerNorm):
        scale = torch.sqrt(x.var(unbiased=False) + norm.eps)

        def through_norm(v):
            return (v - v.mean(-1, keepdim=True)) / scale * norm.weight
    else:  # RMSNorm (Llama, Qwen2)
        scale = torch.sqrt(x.pow(2).mean() + norm.variance_epsilon)

        def through_norm(v):
            return v / scale * norm.weight
    project = sub(lm, arch.paths.project_out).weight if arch.paths.project_out else None
    unembed = sub(lm, arch.paths.unembed).weight[token]  # [embed_dim]

    def read(v):
        y = through_norm(v)
        return (y @ project.T if project is not None else y) @ unembed

    d = arch.d_head
    per_head = torch.empty(arch.n_layers, arch.n_heads)
    for layer in range(arch.n_layers):
        out_proj = sub(lm, arch.paths.attn_out_proj_of(layer))
        w = out_proj.weight  # nn.Linear: [d_model, in]; GPT-2's Conv1D: [in, d_model]
        for head in range(arch.n_heads):
            zh = z[layer][position, head * d : (head + 1) * d]
            out = zh @ (w[:, head * d : (head + 1) * d].T if isinstance(out_proj, nn.Linear) else w[head * d : (head + 1) * d])
            per_head[layer, head] = read(out)
    return per_head


@pytest.mark.parametrize("kind", ["gpt2", "opt", "projected", "llama", "qwen2", "gpt_neox"])
def test_attribution_per_head_and_sum(tiny_lm, opt_pre_ln_projected, kind):
    lm = opt_pre_ln_projected if kind == "projected" else tiny_lm(kind)
    ids = ids_of(lm, PROMPT)
    cap = opt_lens.capture(lm, PROMPT)
    token, position = token_id(lm, " Mary"), 9
    with torch.no_grad():
        expected_heads = frozen_readout_reference(lm, ids, token, position)
    attribution = opt_lens.attribute(lm, cap, token, position=position)
    torch.testing.assert_close(attribution.heads, expected_heads, rtol=1e-4, atol=1e-4)
    logit = model_logits(lm, ids)[position, token].item()
    assert attribution.logit == pytest.approx(logit, abs=1e-4)
    parts = attribution.embed + attribution.heads.sum().item() + attribution.mlps.sum().item() + attribution.rest
    assert parts == pytest.approx(logit, abs=1e-3)
    assert attribution.mlps.shape == (lm.arch.n_layers,)


def test_attribution_of_an_ablated_capture_describes_the_ablated_run(tiny_lm):
    lm = tiny_lm("gpt2")
    cap = opt_lens.capture(lm, PROMPT, ablate=[(1, 1), (2, 0)])
    token = int(cap.next_logits.argmax())
    attribution = opt_lens.attribute(lm, cap, token)
    assert attribution.heads[1, 1] == 0 and attribution.heads[2, 0] == 0
    assert attribution.total() == pytest.approx(cap.next_logits[token].item(), abs=1e-3)


def test_attribution_refuses_post_ln(tiny_lm):
    lm = tiny_lm("opt-post-ln")
    cap = opt_lens.capture(lm, PROMPT)
    with pytest.raises(opt_lens.OptLensError, match="post|after every block"):
        opt_lens.attribute(lm, cap, 5)


def test_attribution_refuses_blocks_that_rescale_what_they_add(tmp_path):
    """OLMo-2 normalises each attention and MLP output before adding it to the residual stream (its final norm
    makes generic detection call it pre-LN): the out_proj slices no longer add up to the stream, so the parts
    would not sum to the logit (measured before the check: 179.8 against a logit of 11.0). Refused, not drawn."""
    torch.manual_seed(0)
    config = Olmo2Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, hidden_size=64,
                         intermediate_size=128, max_position_embeddings=128, vocab_size=tiny_models.GPT2_VOCAB,
                         initializer_range=tiny_models.INIT)
    tiny_models.AutoModelForCausalLM.from_config(config, attn_implementation="eager").save_pretrained(tmp_path)
    tiny_models.gpt2_tokenizer().save_pretrained(tmp_path)
    lm = opt_lens.load(str(tmp_path))
    assert lm.arch.norm == "pre"
    cap = opt_lens.capture(lm, PROMPT)
    with pytest.raises(opt_lens.OptLensError, match="do not add up"):
        opt_lens.attribute(lm, cap, int(cap.next_logits.argmax()))
    assert no_hooks_anywhere(lm.model) and not lm.lock.locked()


# ---------------------------------------------------------------- activation patching


def hand_patched_diff(lm, layer, position, clean_ids, corrupted_ids, answer, wrong):
    """Logit diff of the corrupted run with the residual at (layer, position) taken from the clean run."""
    arch = lm.arch
    # Row 0 is the first block's input; row i the output of block i - 1.
    module, kind = (sub(lm, arch.paths.block(0)), "pre") if layer == 0 else (sub(lm, arch.paths.block(layer - 1)), "post")
    seen = []

    def keep(m, args, out=None):
        hidden = args[0] if out is None else (out[0] if isinstance(out, tuple) else out)
        seen.append(hidden[0, position].clone())

    def patch_pre(m, args):
        hidden = args[0].clone()
        hidden[0, position] = seen[0]
        return (hidden, *args[1:])

    def patch_post(m, args, out):
        hidden = (out[0] if isinstance(out, tuple) else out).clone()
        hidden[0, position] = seen[0]
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    model_logits(lm, clean_ids, (module, kind, keep))
    logits = model_logits(lm, corrupted_ids, (module, kind, patch_pre if kind == "pre" else patch_post))[-1]
    return (logits[answer] - logits[wrong]).item()


def patching_pair(lm):
    """Token ids of both prompts, answer and wrong ids, and the unpatched logit diffs of the model's own runs."""
    clean_ids, corrupted_ids = ids_of(lm, PROMPT), ids_of(lm, CORRUPTED)
    answer, wrong = token_id(lm, " Mary"), token_id(lm, " John")
    clean, corrupted = model_logits(lm, clean_ids)[-1], model_logits(lm, corrupted_ids)[-1]
    clean_diff, corrupted_diff = (clean[answer] - clean[wrong]).item(), (corrupted[answer] - corrupted[wrong]).item()
    return clean_ids, corrupted_ids, answer, wrong, clean_diff, corrupted_diff


@pytest.mark.parametrize("kind", ["gpt2", "opt-post-ln", "qwen2"])
def test_patched_cells_equal_hand_patched_runs(tiny_lm, kind):
    lm = tiny_lm(kind)
    clean_ids, corrupted_ids, answer, wrong, clean_diff, corrupted_diff = patching_pair(lm)
    calls = []
    result = opt_lens.patch_resid(lm, PROMPT, CORRUPTED, answer_id=answer, wrong_id=wrong,
                                  progress=lambda done, total: calls.append((done, total)))
    seq = len(clean_ids)
    assert result.shape == (lm.arch.n_layers + 1, seq)
    assert calls[-1] == (result.numel(), result.numel())
    for layer, position in [(0, 8), (1, 1), (1, 8), (lm.arch.n_layers - 1, seq - 1), (lm.arch.n_layers, seq - 1),
                            (lm.arch.n_layers, 3)]:
        diff = hand_patched_diff(lm, layer, position, clean_ids, corrupted_ids, answer, wrong)
        expected = (diff - corrupted_diff) / (clean_diff - corrupted_diff)
        assert result[layer, position].item() == pytest.approx(expected, abs=1e-4), (layer, position)
    # The whole final residual at the last position carries everything the readout sees: exactly 1.
    assert result[-1, -1].item() == 1.0
    last = hand_patched_diff(lm, lm.arch.n_layers, seq - 1, clean_ids, corrupted_ids, answer, wrong)
    assert (last - corrupted_diff) / (clean_diff - corrupted_diff) == 1.0
    # The names differ at position 8 (after OPT's </s>, 9): before it the two runs agree, so patching does nothing.
    assert result[:, 0].abs().max() < 1e-5


@pytest.mark.parametrize("kind,heads_per_batch", [("gpt2", None), ("opt", None), ("opt", 3)])
def test_patch_heads_cells_equal_hand_patched_runs(tiny_lm, kind, heads_per_batch, monkeypatch):
    lm = tiny_lm(kind)
    clean_ids, corrupted_ids, answer, wrong, clean_diff, corrupted_diff = patching_pair(lm)
    if heads_per_batch:
        monkeypatch.setattr(opt_lens.sweeps, "ROWS_PER_BATCH", heads_per_batch * len(corrupted_ids))
    clean_z = out_proj_inputs(lm, clean_ids)
    result = opt_lens.patch_heads(lm, PROMPT, CORRUPTED, answer_id=answer, wrong_id=wrong)
    d = lm.arch.d_head
    for layer in range(lm.arch.n_layers):
        for head in range(lm.arch.n_heads):
            logits = model_logits(lm, corrupted_ids, set_head(lm, layer, head, clean_z[layer][:, head * d : (head + 1) * d]))[-1]
            expected = ((logits[answer] - logits[wrong]).item() - corrupted_diff) / (clean_diff - corrupted_diff)
            assert result[layer, head].item() == pytest.approx(expected, abs=1e-4), (layer, head)


def test_patching_refuses_prompts_of_different_lengths_and_no_effect(tiny_lm):
    lm = tiny_lm("gpt2")
    answer, wrong = token_id(lm, " Mary"), token_id(lm, " John")
    with pytest.raises(opt_lens.OptLensError, match=r"same number of tokens.*14.*16"):
        opt_lens.patch_resid(lm, PROMPT, PROMPT + " her friend", answer_id=answer, wrong_id=wrong)
    with pytest.raises(opt_lens.OptLensError, match=r"same number of tokens.*16.*14"):
        opt_lens.patch_heads(lm, PROMPT + " her friend", PROMPT, answer_id=answer, wrong_id=wrong)
    with pytest.raises(opt_lens.OptLensError, match="same logit difference"):
        opt_lens.patch_heads(lm, PROMPT, PROMPT, answer_id=answer, wrong_id=wrong)


def test_token_losses(tiny_lm):
    lm = tiny_lm("opt")
    cap = opt_lens.capture(lm, PROMPT)
    logits = model_logits(lm, ids_of(lm, PROMPT))
    expected = torch.nn.functional.cross_entropy(logits[:-1], cap.input_ids[1:], reduction="none")
    torch.testing.assert_close(opt_lens.token_losses(cap), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- the demo models' circuit

# (previous-token head, induction head) from the model cards; the probes are those measured below.
DEMO_HEADS = {"demo/tiny-gpt2": ((0, 1), (1, 1)), "demo/tiny-opt": ((0, 2), (1, 2))}
PROBES = [(30, 3), (20, 7), (40, 0), (25, 11)]  # (length of the repeated run, random tokens before it)


def demo_effects(lm, ablate):
    """Mean over the probes of: second-copy loss, first-copy loss, and each head's induction score."""
    second, first, scores = [], [], []
    for seed, (length, noise) in enumerate(PROBES):
        probe, start, period = heads.induction_probe(lm, length=length, seed=seed, noise=noise)
        cap = opt_lens.capture_ids(lm, probe.input_ids, ablate=ablate)
        losses = heads.copy_losses(cap.logits, cap.input_ids, start, period)
        second.append(losses.second)
        first.append(losses.first)
        scores.append(heads.induction_scores(cap.attention, start, period))
    return sum(second) / len(second), sum(first) / len(first), torch.stack(scores).mean(0)


@pytest.mark.parametrize("name", list(DEMO_HEADS))
def test_demo_knocking_out_the_circuit(name):
    # Measured once (nats; mean of the four probes), tiny-gpt2 / tiny-opt:
    #   intact: first copy 7.99 / 8.27, second copy 0.30 / 0.31;
    #   induction head out: second copy 0.58 / 1.02 (+0.27 / +0.71: other layer-1 heads also copy);
    #   all four layer-1 heads out: second copy 8.36 / 8.65, as hard as the first copy;
    #   previous-token head out: second copy 5.61 / 7.84; the induction head's score 0.90 -> 0.29 / 0.90 -> 0.01.
    lm = opt_lens.load(name)
    previous, induction = DEMO_HEADS[name]
    second, first, scores = demo_effects(lm, [])
    assert second < 0.6 and first > 7.0

    second_without, _, _ = demo_effects(lm, [induction])
    assert second_without - second > (0.12 if name == "demo/tiny-gpt2" else 0.35)

    second_without_layer, _, _ = demo_effects(lm, [(1, head) for head in range(lm.arch.n_heads)])
    assert second_without_layer > 0.9 * first

    second_upstream, _, scores_upstream = demo_effects(lm, [previous])
    assert second_upstream - second > (4.0 if name == "demo/tiny-gpt2" else 6.0)
    assert scores[induction] > 0.8
    assert scores_upstream[induction] < (0.45 if name == "demo/tiny-gpt2" else 0.1)
