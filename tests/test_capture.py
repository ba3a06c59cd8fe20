"""Capture faithfulness against transformers' own eager outputs, invariants, hook hygiene, concurrency."""

import functools
import importlib
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

import opt_lens
import tiny_models
from opt_lens import attention
from opt_lens.surgery import get_module

PROMPT = "The cat sat on the mat. Then the cat sat on the mat again! 😀 日本語 <b>bold</b>\n\tend"
FAITHFUL_KINDS = ["gpt2", "opt", "opt-post-ln"]
ALL_KINDS = sorted(tiny_models.CONFIGS)


def reference(lm, cap):
    """What the model itself computes for the same ids in a plain forward (no hooks, nothing recorded)."""
    with torch.inference_mode():
        out = lm.model(cap.input_ids[None], output_hidden_states=True, use_cache=False)
    return out


def plain_next_logits(lm, cap) -> torch.Tensor:
    """``[vocab]``: the last position's logits of a plain forward asked, as capture asks, for that position only."""
    with torch.inference_mode():
        return lm.model(cap.input_ids[None], use_cache=False, logits_to_keep=1).logits[0, -1]


@functools.cache
def eager_model(kind: str):
    """The weights the ``tiny_lm`` fixture saved (same seed), under transformers' own eager attention."""
    return tiny_models.build(kind)


def eager_attention(kind: str, input_ids: torch.Tensor) -> torch.Tensor:
    """``[layer, head, query, key]``: the patterns transformers' eager attention returns for ``input_ids``."""
    with torch.inference_mode():
        out = eager_model(kind)(input_ids[None], output_attentions=True, use_cache=False)
    return torch.stack([a[0] for a in out.attentions])


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_patterns_equal_transformers_eager_attention(tiny_lm, kind):
    lm = tiny_lm(kind)
    cap = opt_lens.capture(lm, PROMPT)
    expected = eager_attention(kind, cap.input_ids)  # [layer, head, query, key]
    for layer in range(lm.arch.n_layers):
        for head in range(lm.arch.n_heads):
            pattern = cap.pattern(layer, head)
            assert pattern.dtype == torch.float32 and pattern.shape == (cap.seq_len, cap.seq_len)
            torch.testing.assert_close(pattern, expected[layer, head], rtol=0, atol=1e-5)
    torch.testing.assert_close(cap.attention, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(set(ALL_KINDS) - {"gpt_neo"}))
def test_rebuilt_query_and_key_states_are_the_forward_passes_own(tiny_lm, kind):
    # The reference: every layer's states as the attention function received them in one plain forward pass.
    lm = tiny_lm(kind)
    cap = opt_lens.capture(lm, PROMPT)
    layer_of = {get_module(lm.model, lm.arch.paths.attn_of(layer)): layer for layer in range(lm.arch.n_layers)}
    with torch.inference_mode(), attention.recording(attention.Recorder(layer_of, cap.seq_len)) as recorder:
        lm.model(cap.input_ids[None], use_cache=False)
    for layer in reversed(range(lm.arch.n_layers)):  # out of order: each layer is rebuilt on its own
        rebuilt, forward = cap.patterns.layer(layer), recorder.layers[layer]
        assert torch.equal(rebuilt.query, forward.query) and torch.equal(rebuilt.key, forward.key)
        assert rebuilt.scaling == forward.scaling


def test_a_long_capture_keeps_only_a_few_rebuilt_layers(tiny_lm, monkeypatch):
    lm = tiny_lm("gpt2")
    one_layer = 2 * 64 * lm.arch.d_model * 4  # queries and keys of one layer at 64 tokens
    monkeypatch.setattr(attention, "STATES_CACHE_BYTES", one_layer)
    cap = opt_lens.capture_ids(lm, torch.arange(64))
    rebuilt = []  # a rebuild reruns the layer's block: count the block calls the model sees
    handles = [get_module(lm.model, lm.arch.paths.block(layer)).register_forward_pre_hook(
        lambda module, args, layer=layer: rebuilt.append(layer)) for layer in range(lm.arch.n_layers)]
    try:
        for layer in (0, 0, 1, 1, 0):
            cap.pattern(layer, 1)
            cap.pattern(layer, 2)
    finally:
        for handle in handles:
            handle.remove()
    assert rebuilt == [0, 1, 0], "a layer is rebuilt once while it is the last one read, and only then"
    expected = eager_attention("gpt2", cap.input_ids)
    torch.testing.assert_close(cap.pattern(0, 3), expected[0, 3], rtol=0, atol=1e-5)
    monkeypatch.setattr(attention, "STATES_CACHE_BYTES", 10**9)
    keeps_all = opt_lens.capture_ids(lm, torch.arange(64))
    assert keeps_all.nbytes() - cap.nbytes() == (lm.arch.n_layers - 1) * one_layer, "room for one layer's states only"


@pytest.mark.parametrize("kind", sorted(set(ALL_KINDS) - {"gpt_neo"}))
def test_capture_output_is_bit_identical_to_transformers_sdpa(tiny_lm, tiny_folder, kind):
    cap = opt_lens.capture(tiny_lm(kind), PROMPT)
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_folder(kind), attn_implementation="sdpa").eval()
    with torch.inference_mode():
        expected = sdpa(cap.input_ids[None], use_cache=False, logits_to_keep=1).logits[0, -1]  # [vocab]
    assert torch.equal(cap.next_logits, expected)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_capture_runs_the_models_own_forward(tiny_lm, kind):
    lm = tiny_lm(kind)
    # GPT-Neo's attention bypasses transformers' attention interface: it loads with eager attention.
    expected_path = attention.EAGER if kind == "gpt_neo" else attention.RECORDED
    assert lm.arch.attention_capture == expected_path
    assert lm.model.config._attn_implementation == ("eager" if kind == "gpt_neo" else attention.IMPLEMENTATION)
    cap = opt_lens.capture(lm, PROMPT)
    assert torch.equal(cap.next_logits, plain_next_logits(lm, cap)), "capture must not change what the model computes"
    torch.testing.assert_close(cap.logits, reference(lm, cap).logits[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", FAITHFUL_KINDS)
def test_residual_stream_matches_hidden_states(tiny_lm, kind):
    lm = tiny_lm(kind)
    cap = opt_lens.capture(lm, PROMPT)
    ref = reference(lm, cap)
    # transformers' hidden states are the embeddings and each block's output, except that the last entry
    # has the final norm (and OPT-350m's project_out) applied; ours keeps the raw last block output.
    for layer in range(lm.arch.n_layers):
        torch.testing.assert_close(cap.resid[layer], ref.hidden_states[layer][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(opt_lens.readout(lm, cap.resid[-1]), ref.logits[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", FAITHFUL_KINDS)
def test_residual_after_block_is_input_of_next_block(tiny_lm, kind):
    lm = tiny_lm(kind)
    inputs = {}

    def remember(layer):
        def hook(module, args, kwargs):
            inputs[layer] = (args[0] if args else kwargs["hidden_states"])[0].clone()

        return hook

    handles = [
        get_module(lm.model, lm.arch.paths.block(layer)).register_forward_pre_hook(remember(layer), with_kwargs=True)
        for layer in range(lm.arch.n_layers)
    ]
    try:
        cap = opt_lens.capture(lm, PROMPT)
    finally:
        for handle in handles:
            handle.remove()
    for layer in range(lm.arch.n_layers):
        assert torch.equal(cap.resid[layer], inputs[layer]), f"resid[{layer}] is not block {layer}'s input"


@pytest.mark.parametrize("kind", FAITHFUL_KINDS)
def test_attention_rows_sum_to_one_and_are_causal(tiny_lm, kind):
    cap = opt_lens.capture(tiny_lm(kind), PROMPT)
    torch.testing.assert_close(cap.attention.sum(-1), torch.ones(cap.attention.shape[:-1]), rtol=0, atol=1e-5)
    future = torch.triu(torch.ones(cap.seq_len, cap.seq_len, dtype=torch.bool), diagonal=1)
    assert torch.all(cap.attention[..., future] == 0)


@pytest.mark.parametrize("kind", FAITHFUL_KINDS)
def test_logit_lens_ends_at_the_model_logits(tiny_lm, kind):
    lm = tiny_lm(kind)
    cap = opt_lens.capture(lm, PROMPT)
    for position in (0, 5, -1):
        lens = opt_lens.logit_lens(lm, cap, position)
        assert lens.shape == (lm.arch.n_layers + 1, lm.arch.vocab_size)
        torch.testing.assert_close(lens[-1], cap.logits[position], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(lens[0], lens[-1]), "the embedding row should differ from the output"


def test_post_ln_lens_reads_through_project_out(tiny_lm):
    lm = tiny_lm("opt-post-ln")
    cap = opt_lens.capture(lm, PROMPT)
    decoder = lm.model.model.decoder
    by_hand = lm.model.lm_head(decoder.project_out(cap.resid[3, 4]))  # no final norm: post-LN
    torch.testing.assert_close(opt_lens.logit_lens(lm, cap, 4)[3], by_hand)
    assert decoder.project_out.out_features == 32 and cap.resid.shape[-1] == 64


def test_logit_lens_map_agrees_with_the_full_lens(tiny_lm):
    lm = tiny_lm("opt")
    cap = opt_lens.capture(lm, PROMPT)
    lens_map = opt_lens.logit_lens_map(lm, cap, positions=[1, 4, -1])
    for column, position in enumerate(lens_map.positions):
        probs = torch.softmax(opt_lens.logit_lens(lm, cap, position), dim=-1)  # [layer + 1, vocab]
        assert torch.equal(lens_map.top_ids[:, column], probs.argmax(-1))
        torch.testing.assert_close(lens_map.top_probs[:, column], probs.max(-1).values)
        final = probs[-1].argmax()
        torch.testing.assert_close(lens_map.final_token_probs[:, column], probs[:, final])
    assert lens_map.top_tokens[-1][-1] == opt_lens.top_k_next(lm, cap, k=1)[0].token
    assert all(0 <= s <= lm.arch.n_layers for s in lens_map.settled_layer())


def test_top_k_next_matches_softmax_of_model_logits(tiny_lm):
    lm = tiny_lm("gpt2")
    cap = opt_lens.capture(lm, PROMPT)
    predictions = opt_lens.top_k_next(lm, cap, k=5)
    probs = torch.softmax(cap.logits[-1], dim=-1)
    top = torch.topk(probs, 5)
    assert [p.token_id for p in predictions] == top.indices.tolist()
    assert [p.rank for p in predictions] == [1, 2, 3, 4, 5]
    torch.testing.assert_close(torch.tensor([p.probability for p in predictions]), top.values, atol=1e-6, rtol=1e-5)
    earlier = opt_lens.top_k_next(lm, cap, k=1, position=3)[0]
    assert earlier.token_id == cap.logits[3].argmax().item()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_capture_point_on_every_family_equals_a_plain_hook(tiny_lm, kind):
    lm = tiny_lm(kind)
    seen = {"attn_out": [], "mlp_out": []}

    def keep(point):
        def hook(module, args, output):
            seen[point].append((output[0] if isinstance(output, tuple) else output).reshape(-1, lm.arch.d_model).clone())

        return hook

    paths = [("attn_out", lm.arch.paths.attn_of), ("mlp_out", lm.arch.paths.mlp_out_of)]
    handles = [
        get_module(lm.model, path_of(layer)).register_forward_hook(keep(point))
        for point, path_of in paths
        for layer in range(lm.arch.n_layers)
    ]
    try:
        ids = opt_lens.tokens.tokenize(lm.tokenizer, PROMPT, lm.arch.max_positions).input_ids
        with torch.inference_mode():
            lm.model(ids[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    cap = opt_lens.capture(lm, PROMPT, points=("attn_out", "mlp_out"))
    for point in ("attn_out", "mlp_out"):
        captured = getattr(cap, point)
        assert captured.shape == (lm.arch.n_layers, cap.seq_len, lm.arch.d_model)
        torch.testing.assert_close(captured, torch.stack(seen[point]), rtol=1e-5, atol=1e-5)
    if lm.arch.norm == "pre":  # block output = input + attention output + MLP output (NeoX: in parallel)
        rebuilt = cap.resid[:-1] + cap.attn_out + cap.mlp_out  # [layer, seq, d_model]
        torch.testing.assert_close(rebuilt, cap.resid[1:], rtol=1e-5, atol=1e-5)


def test_eager_capture_stores_long_prompts_attention_as_float16_within_1e_3(tiny_lm, monkeypatch):
    lm = tiny_lm("gpt_neo")  # the family captured through eager attention
    exact = opt_lens.capture(lm, PROMPT)
    # opt_lens.capture is the function; the module holds the threshold.
    monkeypatch.setattr(importlib.import_module("opt_lens.capturing"), "FLOAT32_ATTENTION_BYTES", 0)
    compact = opt_lens.capture(lm, PROMPT)
    expected = eager_attention("gpt_neo", exact.input_ids)
    assert torch.equal(exact.attention, expected)
    assert (compact.attention - expected).abs().max() <= 1e-3
    assert compact.nbytes() < exact.nbytes()


@pytest.mark.parametrize("kind", FAITHFUL_KINDS)
def test_attention_prefix_keeps_exactly_the_first_tokens_patterns(tiny_lm, kind):
    lm = tiny_lm(kind)
    full = opt_lens.capture(lm, PROMPT)
    prefix = opt_lens.capture(lm, PROMPT, attention_prefix=7)
    assert prefix.attention_tokens == 7 and full.attention_tokens == full.seq_len > 7
    assert torch.equal(prefix.resid, full.resid) and torch.equal(prefix.next_logits, full.next_logits)
    # Causal attention: the first tokens' patterns are the corner of the whole prompt's.
    torch.testing.assert_close(prefix.attention, eager_attention(kind, full.input_ids)[:, :, :7, :7], rtol=0, atol=1e-5)
    assert prefix.nbytes() < full.nbytes()
    assert opt_lens.capture(lm, PROMPT, attention_prefix=10_000).attention_tokens == full.seq_len


def test_hooks_are_removed_after_success_and_failure(tiny_lm):
    lm = tiny_lm("gpt2")

    def hook_count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())

    before = hook_count()
    opt_lens.capture(lm, PROMPT)
    assert hook_count() == before

    def explode(module, args, output):
        raise RuntimeError("boom in the middle of the forward pass")

    handle = get_module(lm.model, lm.arch.paths.mlp_out_of(1)).register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            opt_lens.capture(lm, PROMPT)
    finally:
        handle.remove()
    assert hook_count() == before
    assert not lm.lock.locked()
    after = opt_lens.capture(lm, PROMPT)
    torch.testing.assert_close(after.attention, eager_attention("gpt2", after.input_ids), rtol=0, atol=1e-5)
    assert torch.equal(after.next_logits, plain_next_logits(lm, after))


def test_concurrent_captures_on_two_models_are_each_exact(tiny_lm):
    # Two models whose attention is recorded through the one registered function, in twelve threads at once.
    jobs = [
        (kind, f"Student {i} asks: what does head {i % 4} attend to in sentence {i}?" * (1 + i % 3))
        for i, kind in enumerate(["opt", "llama"] * 6)
    ]
    alone = {job: opt_lens.capture(tiny_lm(job[0]), job[1]) for job in jobs}
    results, errors = {}, []
    start = threading.Barrier(len(jobs))

    def run(job):
        try:
            start.wait()
            results[job] = opt_lens.capture(tiny_lm(job[0]), job[1])
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for job in jobs:
        got, want = results[job], alone[job]
        assert got.tokens == want.tokens
        assert torch.equal(got.attention, want.attention) and torch.equal(got.resid, want.resid)
        assert torch.equal(got.next_logits, want.next_logits)
        torch.testing.assert_close(got.attention, eager_attention(job[0], got.input_ids), rtol=0, atol=1e-5)


def test_prompt_longer_than_context_is_truncated(tiny_lm):
    lm = tiny_lm("gpt2")  # context of 128 positions
    cap = opt_lens.capture(lm, "word" + " word" * 299)
    assert cap.truncated and cap.seq_len == 128 and cap.n_prompt_tokens == 300
    assert cap.attention.shape == (3, 4, 128, 128) and cap.pattern(2, 3).shape == (128, 128)
    assert not opt_lens.capture(lm, "word " * 10).truncated


def test_opt_truncation_keeps_positions_within_the_offset_table(tiny_lm):
    lm = tiny_lm("opt")  # 128 positions, stored as 130 rows because of the offset of 2
    cap = opt_lens.capture(lm, "word " * 300)
    assert cap.seq_len == 128 and cap.tokens[0] == "</s>"
    assert lm.model.model.decoder.embed_positions.weight.shape[0] == 128 + lm.arch.position_offset


@pytest.mark.parametrize("prompt", ["", 123, None])
def test_empty_or_non_text_prompt_is_a_clear_error(tiny_lm, prompt):
    with pytest.raises(opt_lens.OptLensError):
        opt_lens.capture(tiny_lm("gpt2"), prompt)


@pytest.mark.parametrize("prompt", ["😀", "日本語のテキスト", "\x00\x07 bell", "<script>alert(1)</script>", " ", "\n\n"])
def test_odd_prompts_capture(tiny_lm, prompt):
    for kind in ("gpt2", "opt"):
        cap = opt_lens.capture(tiny_lm(kind), prompt)
        assert len(cap.tokens) == cap.seq_len == len(cap.offsets)
        assert all(isinstance(t, str) and t for t in cap.tokens)


def test_capture_pickles_without_the_model(tiny_lm):
    import pickle

    lm = tiny_lm("gpt2")
    cap = opt_lens.capture(lm, PROMPT)
    copied = pickle.loads(pickle.dumps(cap))
    assert len(pickle.dumps(cap)) < cap.nbytes() * 1.5, "the model's weights must not be pickled"
    assert torch.equal(copied.pattern(1, 2), cap.pattern(1, 2))
    with pytest.raises(opt_lens.OptLensError):
        copied.logits  # noqa: B018


def test_lens_readouts_during_other_captures_are_exact(tiny_lm):
    lm = tiny_lm("gpt2")
    cap = opt_lens.capture(lm, PROMPT)
    expected = opt_lens.logit_lens(lm, cap, -1)
    results, errors = [], []

    def collected(work):
        def run():
            try:
                work()
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)
        return run

    threads = [threading.Thread(target=collected(lambda: results.append(opt_lens.logit_lens(lm, cap, -1)))) for _ in range(6)]
    threads += [threading.Thread(target=collected(lambda: opt_lens.capture(lm, PROMPT * 2))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 6
    assert all(torch.equal(r, expected) for r in results)


def test_capture_does_not_keep_its_model_alive(tiny_folder):
    import gc
    import weakref

    lm = opt_lens.load(str(tiny_folder("gpt2")))
    cap = opt_lens.capture(lm, PROMPT)
    model = weakref.ref(lm.model)
    del lm
    gc.collect()
    assert model() is None, "a cached capture must not pin the model's weights"
    assert cap.resid.shape[0] == 4 and cap.next_logits.shape == (50257,)  # what the capture holds itself
    # Logits and the patterns of layers not read yet are rebuilt through the model: say it is gone.
    with pytest.raises(opt_lens.OptLensError, match="no longer loaded"):
        cap.logits
    with pytest.raises(opt_lens.OptLensError, match="no longer loaded"):
        cap.pattern(1, 0)


def test_a_capture_is_never_changed_by_reading_it(tiny_lm):
    lm = tiny_lm("opt")
    cap = opt_lens.capture(lm, PROMPT)
    size = cap.nbytes()
    # Nothing redundant: little more than the residual stream, room for each layer's queries and keys once
    # rebuilt (all layers of a prompt this short) and the last position's logits.
    n_vectors = (lm.arch.n_layers + 1) + 2 * lm.arch.n_layers
    assert size <= 1.05 * (n_vectors * cap.seq_len * lm.arch.d_model * 4 + lm.arch.vocab_size * 4)
    expected = reference(lm, cap).logits[0]
    first = cap.logits
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    cap.attention  # noqa: B018
    assert cap.nbytes() == size and cap.logits is not first, "reading logits keeps no copy in the capture"
    with pytest.raises(AttributeError):
        cap.resid = None


@pytest.mark.parametrize(
    ("ids", "points", "prefix", "message"),
    [
        ([1, 2, 50257], (), None, "vocabulary"),  # GPT-2's vocabulary is 0..50256
        ([1, -1, 2], (), None, "vocabulary"),
        ([1, 2, 3], ("resid_mid",), None, "Unknown capture points"),
        ([1, 2, 3], (), 0, "attention_prefix"),
        ([1.0, 2.7, 3.0], (), None, "whole numbers"),  # was cut to [1, 2, 3] without a word
        ([True, False], (), None, "whole numbers"),
    ],
)
def test_bad_capture_requests_are_clear_errors(tiny_lm, ids, points, prefix, message):
    with pytest.raises(opt_lens.OptLensError, match=message):
        opt_lens.capture_ids(tiny_lm("gpt2"), torch.tensor(ids), points=points, attention_prefix=prefix)


def test_recording_is_only_active_in_the_capturing_thread(tiny_lm):
    lm = tiny_lm("gpt2")
    recorder = attention.Recorder({}, kept=4)
    seen_elsewhere = []

    def plain_forward():
        with torch.inference_mode():
            lm.model(torch.tensor([[1, 2, 3]]), use_cache=False)
        seen_elsewhere.append(dict(recorder.layers))

    with attention.recording(recorder):
        thread = threading.Thread(target=plain_forward)
        thread.start()
        thread.join()
    assert seen_elsewhere == [{}], "another thread's forward was recorded"


def test_positions_outside_the_prompt_are_clear_errors(tiny_lm):
    lm = tiny_lm("gpt2")
    cap = opt_lens.capture(lm, "one two three")  # 3 tokens
    for read in (
        lambda p: opt_lens.logit_lens(lm, cap, p),
        lambda p: opt_lens.top_k_next(lm, cap, position=p),
        lambda p: opt_lens.logit_lens_map(lm, cap, positions=[0, p]),  # used to wrap 3 round to 0 silently
    ):
        for position in (3, -4):
            with pytest.raises(opt_lens.OptLensError, match="outside"):
                read(position)
    assert opt_lens.logit_lens_map(lm, cap, positions=[-1]).positions == [2]


def test_a_sliding_window_mask_is_recorded_and_applied(tmp_path):
    # Qwen2 with a window of 8 tokens on its second layer: sdpa gets a real mask there, not the causal flag.
    config = tiny_models.CONFIGS["qwen2"]()
    config.use_sliding_window, config.sliding_window, config.max_window_layers = True, 8, 1
    config.layer_types = ["full_attention", "sliding_attention"]
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    eager.save_pretrained(tmp_path)
    tiny_models.gpt2_tokenizer().save_pretrained(tmp_path)
    lm = opt_lens.load(str(tmp_path))
    cap = opt_lens.capture(lm, PROMPT)
    with torch.inference_mode():
        expected = torch.stack([a[0] for a in eager(cap.input_ids[None], output_attentions=True).attentions])
    assert cap.seq_len > 8 and (expected[1].tril(-8) == 0).all() and (expected[0].tril(-8) > 0).any()
    torch.testing.assert_close(cap.attention, expected, rtol=0, atol=1e-5)
