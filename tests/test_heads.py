"""Head scores on hand-made attention patterns whose answers are known, and on real captures."""

import math

import pytest
import torch

import opt_lens
from opt_lens import attention, heads
from test_capture import eager_attention, eager_model


def pattern(rows: torch.Tensor) -> attention.StoredPatterns:
    return attention.StoredPatterns(rows[None, None])  # [layer=1, head=1, query, key]


def previous_token_pattern(n: int) -> torch.Tensor:
    rows = torch.zeros(n, n)
    rows[0, 0] = 1
    rows[torch.arange(1, n), torch.arange(n - 1)] = 1
    return pattern(rows)


def uniform_causal(n: int) -> torch.Tensor:
    rows = torch.tril(torch.ones(n, n))
    return pattern(rows / rows.sum(-1, keepdim=True))


def test_pure_previous_token_head_scores_one():
    assert heads.previous_token_scores(previous_token_pattern(6)).item() == 1.0
    assert heads.first_token_scores(previous_token_pattern(6)).item() == pytest.approx(1 / 5)
    assert heads.entropy_scores(previous_token_pattern(6)).item() == pytest.approx(0, abs=1e-6)


def test_uniform_causal_attention_has_known_scores():
    n = 5
    expected_entropy = sum(math.log(q + 1) for q in range(1, n)) / (n - 1)
    assert heads.entropy_scores(uniform_causal(n)).item() == pytest.approx(expected_entropy)
    assert heads.previous_token_scores(uniform_causal(n)).item() == pytest.approx(sum(1 / (q + 1) for q in range(1, n)) / (n - 1))


def test_induction_pattern_scores_one_and_previous_token_pattern_does_not():
    ids, start, period = heads.repeated_random_tokens(100, 6, seed=0, prefix_ids=[2])
    n = len(ids)
    rows = torch.zeros(n, n)
    rows[torch.arange(n), torch.arange(n)] = 1
    second = torch.arange(start + period, n)
    rows[second] = 0
    rows[second, second - period + 1] = 1  # look at the token after the earlier copy
    assert heads.induction_scores(pattern(rows), start, period).item() == 1.0
    assert heads.induction_scores(previous_token_pattern(n), start, period).item() == 0.0


def test_repeated_random_tokens_repeat_and_avoid_excluded_ids():
    ids, start, period = heads.repeated_random_tokens(50, 10, seed=3, prefix_ids=[2], exclude_ids=[0, 1, 2, 3])
    assert ids[0] == 2 and (start, period) == (1, 10) and len(ids) == 21
    assert torch.equal(ids[1:11], ids[11:21])
    assert not set(ids[1:].tolist()) & {0, 1, 2, 3}
    again, _, _ = heads.repeated_random_tokens(50, 10, seed=3, prefix_ids=[2], exclude_ids=[0, 1, 2, 3])
    assert torch.equal(ids, again)


def test_duplicate_token_scores():
    ids = torch.tensor([5, 6, 5, 7])
    rows = torch.eye(4)
    rows[2] = torch.tensor([0.75, 0.0, 0.25, 0.0])  # the repeated 5 puts 0.75 on its earlier copy
    assert heads.duplicate_token_scores(pattern(rows), ids).item() == pytest.approx(0.75)
    assert heads.duplicate_token_scores(pattern(torch.eye(3)), torch.tensor([1, 2, 3])).item() == 0.0


def test_copying_loss_drop_by_hand():
    ids = torch.tensor([9, 1, 2, 3, 1, 2, 3])  # prefix, then [1, 2, 3] twice
    logits = torch.zeros(7, 10)
    logits[4, 2] = logits[5, 3] = 10.0  # confident on the second copy only
    losses = heads.copy_losses(logits, ids, start=1, period=3)
    confident = -torch.log_softmax(logits[4], -1)[2].item()
    assert losses.first == pytest.approx(math.log(10)), "uniform logits on the first copy"
    assert losses.second == pytest.approx(confident)
    assert heads.copying_loss_drop(logits, ids, start=1, period=3) == pytest.approx(math.log(10) - confident)
    # A second copy cut short (or a period of one token, which predicts nothing) is a clear error, not an assert.
    for short_ids, period in ((ids[:6], 3), (ids, 1)):
        with pytest.raises(opt_lens.OptLensError, match="no full second copy"):
            heads.copy_losses(logits[: len(short_ids)], short_ids, start=1, period=period)


def expected_scores(kind: str, prompt_ids: torch.Tensor, probe_ids: torch.Tensor, start: int, period: int) -> dict:
    """The score formulas written out on whole patterns from transformers' eager attention."""
    a = eager_attention(kind, prompt_ids)  # [layer, head, query, key]
    rows = a[:, :, 1:]  # query 0 can only attend to itself
    earlier_copy = torch.tril(prompt_ids[:, None] == prompt_ids[None, :], diagonal=-1)  # [query, key]
    has_copy = earlier_copy.any(-1)
    probe = eager_attention(kind, probe_ids)
    second = torch.arange(start + period, start + 2 * period)
    with torch.inference_mode():
        logits = eager_model(kind)(probe_ids[None]).logits[0]  # [seq, vocab]
    loss = -torch.log_softmax(logits, -1)[:-1].gather(-1, probe_ids[1:, None])[:, 0]  # [seq - 1]
    return {
        "previous_token": a.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1),
        "first_token": rows[..., 0].mean(-1),
        "entropy": -(rows * rows.clamp_min(1e-30).log()).sum(-1).mean(-1),
        "duplicate_token": (a[:, :, has_copy] * earlier_copy[has_copy]).sum(-1).mean(-1),
        "induction": probe[:, :, second, second - period + 1].mean(-1),
        "copying_loss_drop": float(loss[start : start + period - 1].mean() - loss[start + period : start + 2 * period - 1].mean()),
    }


@pytest.mark.parametrize("kind", ["gpt2", "opt", "llama", "gpt_neo"])
@pytest.mark.parametrize("row_block_bytes", [attention.ROW_BLOCK_BYTES, 1])  # one block, and one row a block
def test_head_scores_equal_the_formulas_on_eager_patterns(tiny_lm, monkeypatch, kind, row_block_bytes):
    monkeypatch.setattr(attention, "ROW_BLOCK_BYTES", row_block_bytes)
    lm = tiny_lm(kind)
    cap = opt_lens.capture(lm, "The cat sat on the mat. The cat sat on the mat.")
    scores = heads.head_scores(lm, cap, length=20)
    probe, start, period = heads.induction_probe(lm, length=20)
    expected = expected_scores(kind, cap.input_ids, probe.input_ids, start, period)
    for name, values in expected.items():
        torch.testing.assert_close(getattr(scores, name), values, rtol=0, atol=1e-5, msg=name)
    assert set(scores.as_dict()) == {"previous token", "induction", "first token", "duplicate token", "entropy"}


def test_induction_probe_starts_with_the_tokenizers_bos(tiny_lm):
    probe, start, period = heads.induction_probe(tiny_lm("opt"), length=20)
    assert probe.tokens[0] == "</s>" and start == 1 and period == 20


def test_head_scores_say_how_far_they_are_layer_by_layer_and_score_the_same():
    """A long prompt's scores take tens of seconds: the app shows "layer k of L" from this callback."""
    lm = opt_lens.load("demo/tiny-gpt2")
    cap = opt_lens.capture(lm, "The cat sat on the mat. The dog sat on the rug.")
    calls = []
    with_progress = heads.head_scores(lm, cap, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]  # the demo has two layers
    for name, values in heads.head_scores(lm, cap).as_dict().items():
        assert torch.equal(values, with_progress.as_dict()[name]), name
