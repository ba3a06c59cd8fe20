"""Comparing two models on one prompt: alignment by characters, divergences by hand, head matching."""

import math

import pytest
import torch

import opt_lens
from opt_lens import compare

PROMPT = "The cat 😀 sat on the 日本 mat. The cat sat."


@pytest.fixture(scope="module")
def pair(tiny_lm):
    gpt2, opt = tiny_lm("gpt2"), tiny_lm("opt")
    return gpt2, opt, opt_lens.capture(gpt2, PROMPT), opt_lens.capture(opt, PROMPT)


def test_alignment_pairs_identical_pieces_and_leaves_bos_unaligned(pair):
    _, _, a, b = pair
    alignment = compare.align_tokens(a, b)
    unaligned = [row for row in alignment.rows if not row.aligned]
    assert [(row.token_b, row.position_b) for row in unaligned] == [("</s>", 0)]
    assert alignment.pairs == [(i, i + 1) for i in range(a.seq_len)]  # same BPE, shifted by OPT's </s>
    for row in alignment.rows[1:]:
        assert row.token_a == row.token_b and row.text == PROMPT[row.start : row.end]
    assert len(alignment.table()) == a.seq_len + 1


def test_split_characters_align_piece_by_piece(pair):
    _, _, a, b = pair
    emoji_rows = [row for row in compare.align_tokens(a, b).rows if "😀" in row.text]
    assert len(emoji_rows) == 2 and all(row.aligned for row in emoji_rows)
    assert "<0x80>" in emoji_rows[1].token_a


def test_different_splits_stay_unaligned(pair):
    gpt2, _, a, _ = pair
    other = opt_lens.capture(gpt2, PROMPT)
    # Pretend B split "The" into two tokens: neither half covers the same characters as A's "The".
    other.offsets = [(0, 1), (1, 3)] + other.offsets[1:]
    other.tokens = ["T", "he"] + other.tokens[1:]
    other.input_ids = torch.cat([torch.tensor([51, 258]), other.input_ids[1:]])
    alignment = compare.align_tokens(a, other)
    unaligned = sorted((row.token_a or "", row.token_b or "") for row in alignment.rows if not row.aligned)
    assert unaligned == [("", "T"), ("", "he"), ("The", "")]


def test_kl_and_js_by_hand():
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    expected = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    assert compare.kl_divergence(p.log(), q.log()) == pytest.approx(expected)
    assert compare.kl_divergence(p.log(), p.log()) == 0
    m = (p + q) / 2
    expected_js = 0.5 * float((p * (p / m).log()).sum()) + 0.5 * float((q * (q / m).log()).sum())
    assert compare.js_divergence(p.log(), q.log()) == pytest.approx(expected_js)
    assert 0 < compare.js_divergence(p.log(), q.log()) <= math.log(2)


def test_model_against_itself_agrees_completely(pair):
    gpt2, _, a, _ = pair
    result = compare.compare_next_tokens(gpt2, a, gpt2, a, k=5)
    assert result.kl_a_b == pytest.approx(0, abs=1e-12) and result.js == pytest.approx(0, abs=1e-12)
    assert result.top_k_overlap == 1.0 and result.top_a == result.top_b
    # Only <|endoftext|>, a special token, lies outside the compared vocabulary.
    eos = torch.softmax(a.next_logits.double(), -1)[gpt2.tokenizer.eos_token_id].item()
    assert result.mass_outside_a == pytest.approx(eos, rel=1e-6)


def test_gpt2_against_opt_matches_by_piece_not_id(pair):
    gpt2, opt, a, b = pair
    result = compare.compare_next_tokens(gpt2, a, opt, b, k=10)
    assert result.shared_vocabulary == 50256  # GPT-2's vocabulary minus <|endoftext|>
    assert result.kl_a_b > 0 and result.kl_b_a > 0 and 0 < result.js <= math.log(2)
    assert result.top_a == [(p.token, pytest.approx(p.probability)) for p in opt_lens.top_k_next(gpt2, a, k=10)]
    assert result.top_k_overlap == len(result.shared_top) / 10


def test_divergence_over_shared_support_by_hand(pair):
    gpt2, opt, a, b = pair
    result = compare.compare_next_tokens(gpt2, a, opt, b)
    # GPT-2 and this OPT share ids for every ordinary piece, so the shared support is ids 0..50255 in both.
    log_a = torch.log_softmax(a.next_logits.double()[:50256], -1)
    log_b = torch.log_softmax(b.next_logits.double()[:50256], -1)
    assert result.kl_a_b == pytest.approx(float((log_a.exp() * (log_a - log_b)).sum()), rel=1e-9)


def test_each_head_best_matches_itself(pair):
    _, _, a, _ = pair
    matches = compare.match_heads(a, a, compare.align_tokens(a, a))
    assert matches.best_b == list(range(len(matches.heads_a)))
    assert matches.best_score == pytest.approx([1.0] * len(matches.heads_a), abs=1e-5)
    assert matches.similarity.shape == (12, 12)


def test_head_matching_across_models_by_hand(pair):
    _, _, a, b = pair
    matches = compare.match_heads(a, b, compare.align_tokens(a, b))
    n = a.seq_len
    # Head (2, 0) of A vs head (1, 3) of B, computed directly on the aligned positions (B shifted by one).
    pa = a.attention[2, 0][1:, :]
    pb = b.attention[1, 3][2:, 1:]
    pb = pb / pb.sum(-1, keepdim=True)
    cosine = torch.nn.functional.cosine_similarity(pa.reshape(-1), pb.reshape(-1), dim=0)
    assert pa.shape == (n - 1, n)
    assert matches.similarity[2 * 4 + 0, 1 * 4 + 3].item() == pytest.approx(cosine.item(), abs=1e-5)
    assert all(-1e-6 <= s <= 1 + 1e-6 for s in matches.best_score)
    top = matches.top_pairs(3)
    assert [score for *_, score in top] == sorted((score for *_, score in top), reverse=True)


def test_depth_curves_share_one_scale(pair):
    gpt2, opt, a, b = pair
    curve = compare.depth_curve(gpt2, a)
    assert curve.depth[0] == 0 and curve.depth[-1] == 1 and len(curve.depth) == gpt2.arch.n_layers + 1
    assert curve.final_token == opt_lens.top_k_next(gpt2, a, k=1)[0].token == curve.top_token[-1]
    assert curve.final_token_prob[-1] == pytest.approx(curve.top_prob[-1])
    assert 0 <= curve.settled_depth <= 1
    assert compare.depth_curve(opt, b).depth == curve.depth  # both tiny models have 3 layers
