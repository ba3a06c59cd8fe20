"""The one traced run under every capture, sweep and patch: its points and edits against plain torch hooks,
its stop, its hook and lock hygiene, fair turns on the lock, and captures reused by sweeps."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import torch

import opt_lens
from opt_lens import lens
from opt_lens.tracing import Point, scale_mlp, set_neuron, set_resid, trace, zero_heads
from opt_lens.turns import FairLock
from test_causal import PROMPT, model_logits, no_hooks_anywhere, plain_hooks, sub

KINDS = ["gpt2", "opt", "llama"]


def inputs_of(lm, path, ids):
    """What the module at ``path`` receives first, per call, from a plain forward pass with a torch pre-hook."""
    seen = []
    model_logits(lm, ids, (sub(lm, path), "pre", lambda module, args: seen.append(args[0].clone())))
    return seen[0]


def outputs_of(lm, path, ids):
    seen = []
    model_logits(lm, ids, (sub(lm, path), "post", lambda module, args, out: seen.append(
        (out[0] if isinstance(out, tuple) else out).clone())))
    return seen[0]


@pytest.mark.parametrize("kind", KINDS)
def test_recorded_points_are_what_the_modules_see(tiny_lm, kind):
    lm = tiny_lm(kind)
    arch, ids = lm.arch, opt_lens.capture(lm, PROMPT).input_ids
    layer = 1
    names = ("resid_pre", "resid_post", "z", "attn_out", "mlp_hidden", "mlp_out")
    run = trace(lm, ids, record=[Point(name, layer) for name in names], last_logits_only=False)
    block, seq = arch.paths.block(layer), len(ids)
    expected = {
        "resid_pre": inputs_of(lm, block, ids),
        "resid_post": outputs_of(lm, block, ids),
        "z": inputs_of(lm, arch.paths.attn_out_proj_of(layer), ids).reshape(1, seq, arch.n_heads, arch.d_head),
        "attn_out": outputs_of(lm, arch.paths.attn_of(layer), ids),
        "mlp_hidden": inputs_of(lm, arch.paths.mlp_down_of(layer), ids).reshape(1, seq, arch.d_mlp),
        "mlp_out": outputs_of(lm, arch.paths.mlp_out_of(layer), ids).reshape(1, seq, arch.d_model),
    }
    for name in names:
        assert torch.equal(run[Point(name, layer)], expected[name]), name
    assert torch.equal(run.output.logits[0], model_logits(lm, ids))


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_value_states_are_the_value_projection(tiny_lm, kind):
    lm = tiny_lm(kind)
    arch, ids = lm.arch, opt_lens.capture(lm, PROMPT).input_ids
    states = trace(lm, ids, record=[Point("qkv", 0)])[Point("qkv", 0)]
    if kind == "gpt2":  # the fused projection's last third
        value = outputs_of(lm, "transformer.h.0.attn.c_attn", ids)[0, :, 2 * arch.d_model :]
    else:
        value = outputs_of(lm, "model.decoder.layers.0.self_attn.v_proj", ids)[0]
    expected = value.reshape(len(ids), arch.n_heads, arch.d_head).transpose(0, 1)  # [head, seq, d_head]
    torch.testing.assert_close(states.value, expected, rtol=0, atol=0)
    assert states.query.shape == states.key.shape == expected.shape


@pytest.mark.parametrize("kind", KINDS)
def test_edits_equal_hand_hooked_runs(tiny_lm, kind):
    lm = tiny_lm(kind)
    arch, ids = lm.arch, opt_lens.capture(lm, PROMPT).input_ids
    d_head, neuron = arch.d_head, 5

    def zero_head_2(module, args):
        z = args[0].clone()
        z[..., 2 * d_head : 3 * d_head] = 0
        return (z,)

    def neuron_to_3(module, args):
        hidden = args[0].clone()
        hidden[..., neuron] = 3.0
        return (hidden,)

    def halve(module, args, out):
        return out * 0.5

    expected = model_logits(lm, ids, (sub(lm, arch.paths.attn_out_proj_of(0)), "pre", zero_head_2),
                            (sub(lm, arch.paths.mlp_down_of(1)), "pre", neuron_to_3),
                            (sub(lm, arch.paths.mlp_out_of(0)), "post", halve))
    edits = [zero_heads(0, [2]), set_neuron(1, neuron, 3.0), scale_mlp(0, 0.5)]
    run = trace(lm, ids, record=[Point("z", 0)], edits=edits, last_logits_only=False)
    torch.testing.assert_close(run.output.logits[0], expected, rtol=1e-5, atol=1e-5)
    z = run[Point("z", 0)]  # [1, seq, head, d_head]: recorded after the edit
    assert (z[:, :, 2] == 0).all() and (z[:, :, 1] != 0).any()


def test_a_residual_edit_replaces_one_position(tiny_lm):
    lm = tiny_lm("gpt2")
    ids = opt_lens.capture(lm, PROMPT).input_ids
    value = torch.full((lm.arch.d_model,), 0.25)

    def replace(module, args):
        hidden = args[0].clone()
        hidden[0, 3] = value
        return (hidden,)

    expected = model_logits(lm, ids, (sub(lm, lm.arch.paths.block(1)), "pre", replace))
    got = trace(lm, ids, edits=[set_resid("resid_pre", 1, torch.tensor([3]), value[None])], last_logits_only=False)
    torch.testing.assert_close(got.output.logits[0], expected, rtol=1e-5, atol=1e-5)


def test_a_stopped_run_calls_no_later_block_and_leaves_no_hooks(tiny_lm):
    lm = tiny_lm("gpt2")
    ids = torch.arange(6)
    later = []
    with plain_hooks((sub(lm, lm.arch.paths.block(2)), "pre", lambda module, args: later.append(1))):
        run = trace(lm, ids, record=[Point("z", 0)], stop=Point("mlp_hidden", 1))
    assert later == [] and run.output is None
    assert run[Point("mlp_hidden", 1)].shape == (1, 6, lm.arch.d_mlp)
    assert no_hooks_anywhere(lm.model) and not lm.lock.locked()
    with pytest.raises(opt_lens.OptLensError, match="no point"):
        trace(lm, ids, record=[Point("nowhere", 0)])
    with pytest.raises(opt_lens.OptLensError, match="recorded but not changed"):
        trace(lm, ids, edits=[opt_lens.Edit(Point("attn_out", 0), lambda x: x)])
    assert no_hooks_anywhere(lm.model) and not lm.lock.locked()


def test_query_key_value_states_are_refused_on_eager_models(tiny_lm):
    with pytest.raises(opt_lens.OptLensError, match="bypasses"):
        trace(tiny_lm("gpt_neo"), torch.arange(4), record=[Point("qkv", 0)])


def test_the_lock_serves_waiting_threads_in_the_order_they_asked():
    lock, order = FairLock(), []
    lock.acquire()
    threads = []
    for i in range(5):
        thread = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        thread.start()
        threads.append(thread)
        while len(lock._waiting) < i + 1:  # each thread queued before the next starts
            time.sleep(0.001)
    lock.release()
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4] and not lock.locked()


def test_a_capture_is_rebuilt_point_by_point_as_it_was_recorded(tiny_lm):
    lm = tiny_lm("opt")
    points = ("attn_out", "mlp_out", "z", "mlp_hidden")
    for ablate in ({}, {"ablate": [(0, 1)], "ablate_mlps": [1], "ablate_with": "mean"}):
        kept = opt_lens.capture(lm, PROMPT, points=points, **ablate)
        plain = opt_lens.capture(lm, PROMPT, **ablate)
        for layer in range(lm.arch.n_layers):
            for name in points:
                assert torch.equal(plain.point(name, layer), getattr(kept, name)[layer]), (name, layer, ablate)
        assert torch.equal(plain.head_output(0, -1), kept.z[0, -1])
    assert (plain.head_output(0, 4)[1] == plain.point("z", 0)[4, 1]).all()


def test_sweeps_reuse_a_capture_and_give_its_text_results(tiny_lm):
    lm = tiny_lm("gpt2")
    clean, corrupted = opt_lens.capture(lm, PROMPT), opt_lens.capture(lm, PROMPT.replace("John gave", "Mary gave"))
    embeddings = []
    with plain_hooks((sub(lm, lm.arch.paths.embed), "post", lambda *a: embeddings.append(1))):
        effects = opt_lens.head_effects(lm, clean)
        answer, wrong = clean.next_logits.topk(2).indices.tolist()
        resid = opt_lens.patch_resid(lm, clean, corrupted, answer_id=answer, wrong_id=wrong)
        heads = opt_lens.patch_heads(lm, clean, corrupted, answer_id=answer, wrong_id=wrong)
    assert embeddings == [], "a sweep given captures ran the prompt again"
    assert torch.equal(effects, opt_lens.head_effects(lm, PROMPT))
    assert torch.equal(resid, opt_lens.patch_resid(lm, clean.text, corrupted.text, answer_id=answer, wrong_id=wrong))
    assert torch.equal(heads, opt_lens.patch_heads(lm, clean.text, corrupted.text, answer_id=answer, wrong_id=wrong))
    with pytest.raises(opt_lens.OptLensError, match="taken on"):
        opt_lens.head_effects(tiny_lm("opt"), clean)
    with pytest.raises(opt_lens.OptLensError, match="taken on"):
        opt_lens.attribute(tiny_lm("opt"), clean, answer)


def test_token_losses_read_in_blocks_equal_the_direct_computation(tiny_lm, monkeypatch):
    lm = tiny_lm("gpt2")
    cap = opt_lens.capture(lm, PROMPT * 3)
    direct = -torch.log_softmax(cap.logits[:-1].float(), dim=-1).gather(-1, cap.input_ids[1:, None])[:, 0]
    monkeypatch.setattr(lens, "_POSITION_CHUNK", 7)  # several blocks and a short last one
    torch.testing.assert_close(opt_lens.token_losses(cap), direct, rtol=1e-6, atol=1e-6)


def test_loading_registers_the_attention_function_and_describing_does_not():
    script = (
        "import opt_lens, opt_lens.attention as a\n"
        "from transformers import AttentionInterface\n"
        "opt_lens.describe_pretrained('demo/tiny-gpt2')\n"
        "print(a.IMPLEMENTATION in AttentionInterface())\n"
        "opt_lens.load('demo/tiny-gpt2')\n"
        "print(a.IMPLEMENTATION in AttentionInterface())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["False", "True"]
